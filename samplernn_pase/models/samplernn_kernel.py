"""SampleRNN's generation loop compiled with numba: the one allowed second copy of its math.

`SampleRNN._generate_steps` (with `TierStep.step`, `SampleMLP.head` and `_VocoderStep`)
is the definition of a generation step; it runs on a GPU, and wherever numba cannot be
imported. On the CPU it pays about 20 PyTorch calls per sample from Python, so the
interpreter, not the arithmetic, sets its pace (0.25x real time at the demo size). The
kernel below runs the same loop (frame tiers' GRU steps and upsampling, the sample
level's embedding sum and MLP, Gumbel-max sampling, the linear prediction continued in
float64 with the residual's high-pass, the harmonic source's terms, the
log-probabilities) over numpy views of the arrays the Python step uses. It is a second
copy of that math, allowed because it is the only way to run the loop without Python per
sample; `tests/test_samplernn_kernel.py`
holds it equal to the Python step (the same codes for the same seed, log-probabilities
within 1e-5), so a change to one that is not made to the other fails there.

What it does not copy: everything that does not depend on the codes stays with the torch
code that the Python step uses (`TierStep`'s constant gates, folded weights and biases,
`SampleMLP.input_table`, `_VocoderStep`'s predictors and source terms), and the sampling
noise is drawn by `gumbel_noise`, the Python step's own torch calls, one top frame at a
time, a block of frames per kernel call so that memory stays bounded.

Rows (streams) are independent, and each row's arithmetic does not depend on which rows
share its call, so the rows are split over threads (the kernel releases the GIL) and
the output is the same for any number of threads.
"""
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from samplernn_pase.audio.excitation import highpass_step

try:
    import numba
except ImportError:     # numba is optional: without it generation runs the Python step
    numba = None

BLOCK_BYTES = 32 << 20   # noise + source terms of one kernel call, all rows together
TILE = 512               # columns of a product at a time


def available() -> bool:
    return numba is not None


def _jit(function):
    if numba is None:
        return function
    return numba.njit(cache=True, nogil=True, fastmath={"contract"})(function)


# the Python step's own high-pass, compiled without contraction (bitwise as in float64 torch)
_highpass_step = highpass_step if numba is None else numba.njit(cache=True, nogil=True)(highpass_step)


@_jit
def _accumulate(x, weight, out, skip_zeros):
    """out (R, Out) += x (R, In) @ weight (In, Out): `_accumulate_sparse` where x has passed a
    ReLU (about half its entries are zeros, skipped), else `_accumulate_dense`. Each row's
    sums run in the same order whatever R is."""
    if skip_zeros:
        _accumulate_sparse(x, weight, out)
    else:
        _accumulate_dense(x, weight, out)


@_jit
def _accumulate_dense(x, weight, out):
    """Four rows of the weight at a time (a quarter of the loads and stores of out), each
    read once for all R rows, TILE columns at a time (the rows' tiles stay in the L1
    cache)."""
    columns, inner = weight.shape[1], weight.shape[0]
    for start in range(0, columns, TILE):
        stop = min(start + TILE, columns)
        m = 0
        while m < inner:
            if m + 4 <= inner:
                w0, w1, w2, w3 = weight[m, start:stop], weight[m + 1, start:stop], \
                    weight[m + 2, start:stop], weight[m + 3, start:stop]
                for b in range(x.shape[0]):
                    v0, v1, v2, v3 = x[b, m], x[b, m + 1], x[b, m + 2], x[b, m + 3]
                    row = out[b, start:stop]
                    for c in range(w0.shape[0]):   # from 0: no negative-index check, vectorized
                        row[c] += v0 * w0[c] + v1 * w1[c] + v2 * w2[c] + v3 * w3[c]
                m += 4
            else:
                w0 = weight[m, start:stop]
                for b in range(x.shape[0]):
                    v0, row = x[b, m], out[b, start:stop]
                    for c in range(w0.shape[0]):
                        row[c] += v0 * w0[c]
                m += 1


@_jit
def _accumulate_sparse(x, weight, out):
    """Row by row of x: its nonzero entries listed, then four weight rows at a time."""
    columns, inner = weight.shape[1], weight.shape[0]
    nonzero = np.empty(inner, np.int64)
    for b in range(x.shape[0]):
        count = 0
        for m in range(inner):
            if x[b, m] != 0:
                nonzero[count] = m
                count += 1
        for start in range(0, columns, TILE):
            stop = min(start + TILE, columns)
            row = out[b, start:stop]
            g = 0
            while g < count:
                if g + 4 <= count:
                    m0, m1, m2, m3 = nonzero[g], nonzero[g + 1], nonzero[g + 2], nonzero[g + 3]
                    v0, v1, v2, v3 = x[b, m0], x[b, m1], x[b, m2], x[b, m3]
                    w0, w1, w2, w3 = weight[m0, start:stop], weight[m1, start:stop], \
                        weight[m2, start:stop], weight[m3, start:stop]
                    for c in range(w0.shape[0]):
                        row[c] += v0 * w0[c] + v1 * w1[c] + v2 * w2[c] + v3 * w3[c]
                    g += 4
                else:
                    v0, w0 = x[b, nonzero[g]], weight[nonzero[g], start:stop]
                    for c in range(w0.shape[0]):
                        row[c] += v0 * w0[c]
                    g += 1


@_jit
def _mulaw32(x, q):
    """`mulaw_encode` of one float32 value, its float32 operations in the same order."""
    one = np.float32(1.0)
    x = min(max(x, -one), one)
    mu = np.float32(q - 1)
    y = np.float32(math.log1p(mu * abs(x))) / np.float32(math.log1p(q - 1))
    if x < 0:
        y = -y
    code = math.floor((y + one) * np.float32(0.5) * np.float32(q))
    return min(max(int(code), 0), q - 1)


@_jit
def _mulaw64(x, q):
    """`mulaw_encode` of one float64 value."""
    x = min(max(x, -1.0), 1.0)
    y = math.log1p((q - 1) * abs(x)) / math.log1p(q - 1)
    if x < 0:
        y = -y
    return min(max(int(math.floor((y + 1.0) * 0.5 * q)), 0), q - 1)


@_jit
def _gru_layer(gates, h, weight_hh_t, hidden_size):
    """`recurrent.gru_step` on the (R, 4H) buffer [n_x, r, z, n_h] filled with its input part:
    adds the state product of h (R, H) and updates h in place."""
    H = hidden_size
    state = np.zeros((h.shape[0], 3 * H), np.float32)    # contiguous: the product vectorizes
    _accumulate(h, weight_hh_t, state, False)
    one = np.float32(1.0)
    for b in range(h.shape[0]):
        g = gates[b]
        g[H:] += state[b]
        for k in range(H):
            r = one / (one + np.float32(math.exp(-g[H + k])))
            z = one / (one + np.float32(math.exp(-g[2 * H + k])))
            n = np.float32(math.tanh(g[k] + r * g[3 * H + k]))
            h[b, k] = n + z * (h[b, k] - n) if z < 0.5 else h[b, k] - (h[b, k] - n) * (one - z)


@_jit
def _tier_step(i, frame, j_above, codes, p, code_values, frame_size, layer_start, in_w, in_b, hh_t,
               hidden, const_gates, up_w, up_bias, upper_w, upper_gates, ratio):
    """`TierStep.step` of tier i for all rows: the GRU layers, then the upsampled output
    (R, r * H_out), the r vectors one after the other."""
    rows = codes.shape[0]
    fs = frame_size[i]
    first = layer_start[i]
    gates = const_gates[i][:, frame].copy()                        # (R, 4H)
    previous = np.empty((rows, fs), np.float32)
    for b in range(rows):
        for m in range(fs):
            previous[b, m] = code_values[codes[b, p - fs + m]]
    _accumulate(previous, in_w[first], gates, False)
    H = hh_t[first].shape[0]
    if i > 0:
        above = upper_gates[i][j_above]
        for b in range(rows):
            for c in range(3 * H):
                gates[b, c] += above[b, c]
    _gru_layer(gates, hidden[first], hh_t[first], H)
    x = hidden[first]
    for layer in range(first + 1, layer_start[i + 1]):
        gates = np.empty((rows, 4 * H), np.float32)
        for b in range(rows):
            gates[b] = in_b[layer]
        _accumulate(x, in_w[layer], gates, False)
        _gru_layer(gates, hidden[layer], hh_t[layer], H)
        x = hidden[layer]
    up = up_bias[i][:, frame].copy()                                # (R, r * H_out)
    _accumulate(x, up_w[i], up, False)
    return up


@_jit
def _upper_gates(up, ratio, weight, out):
    """`TierStep.upper_input` of the tier below: out (r, R, 3H) = the r upsampled vectors of
    up (R, r * H_out) (column j * H_out + h) times weight (H_out, 3H), input part order."""
    width = weight.shape[0]
    for j in range(ratio):
        vectors = up[:, j * width:(j + 1) * width]
        block = out[j]
        block[:] = 0
        _accumulate(vectors, weight, block, False)


@_jit
def _excitation(x, b, p, frame, j, codes, signal, code_values, lpc, harmonic, prediction_table, source,
                block_frame, q):
    """`_VocoderStep.add_terms` for row b: adds the prediction's code embedding and the source's
    term to x (H,); returns (prediction from the codes (float32), continuation of the
    unquantized signal (float64))."""
    prediction, continuation = np.float32(0.0), 0.0
    if lpc.shape[2] > 0:
        order = lpc.shape[2]
        for o in range(order):
            c = lpc[b, frame, o]
            prediction += code_values[codes[b, p - order + o]] * c
            continuation += signal[b, p - order + o] * np.float64(c)
        if harmonic.shape[2] > 0:
            prediction += harmonic[b, frame, j]
            continuation += np.float64(harmonic[b, frame, j])
        x += prediction_table[_mulaw32(prediction, q)]
    if source.shape[3] > 0:
        x += source[b, block_frame, j]
    return prediction, continuation


@_jit
def _draw(logits, noise, temperature):
    """argmax(logits / temperature + noise), or argmax(logits) at temperature 0; the first
    maximum, as torch.argmax."""
    best, choice = -np.inf, 0
    for c in range(logits.shape[0]):
        v = logits[c] / temperature + noise[c] if temperature > 0 else logits[c]
        if v > best:
            best, choice = v, c
    return choice


@_jit
def _log_softmax_at(logits, c):
    top = logits.max()
    total = 0.0
    for v in logits:
        total += math.exp(np.float64(v - top))
    return np.float32(logits[c] - top - math.log(total))


@_jit
def _sample_level(x, rows_up, p, codes, table, k, q):
    """The first layer's input from the codes (`SampleMLP.input_table`'s rows of the last k
    codes) plus the bottom tier's output for this sample, into x (R, H)."""
    for b in range(x.shape[0]):
        x[b] = rows_up[b]
        for m in range(k):
            x[b] += table[m * q + codes[b, p - k + m]]


@_jit
def _head(x, mlp_layers, mlp_w, mlp_b, out_w, out_b):
    """`SampleMLP.head`: ReLU, hidden layers with ReLU, output -> logits (R, q)."""
    rows = x.shape[0]
    for b in range(rows):
        for c in range(x.shape[1]):
            x[b, c] = max(x[b, c], np.float32(0.0))
    for layer in range(mlp_layers):
        y = np.empty((rows, mlp_b[layer].shape[0]), np.float32)
        for b in range(rows):
            y[b] = mlp_b[layer]
        _accumulate(x, mlp_w[layer], y, True)
        for b in range(rows):
            for c in range(y.shape[1]):
                y[b, c] = max(y[b, c], np.float32(0.0))
        x = y
    logits = np.empty((rows, out_b.shape[0]), np.float32)
    for b in range(rows):
        logits[b] = out_b
    _accumulate(x, out_w, logits, True)
    return logits


@_jit
def _emit(b, p, frame, choice, codes, signal, code_values, continuation, prediction, highpass, highpass_state,
          scale, q):
    """`_VocoderStep.sample_code` for row b: the continuation plus the sampled residual
    (times the frame's scale where scale (R, n) is not (R, 0), then high-passed unless
    highpass is NaN) is the signal's next sample, and its code is emitted. Returns the
    residual code teacher forcing reads off the emitted code."""
    excitation = np.float64(code_values[choice])
    if scale.shape[1] > 0:
        excitation *= np.float64(scale[b, frame])
    if not math.isnan(highpass):
        residual = excitation
        excitation = _highpass_step(excitation, highpass_state[b, 0], highpass_state[b, 1], highpass)
        highpass_state[b, 0], highpass_state[b, 1] = residual, excitation
    value = min(max(continuation + excitation, -1.0), 1.0)
    signal[b, p] = value
    codes[b, p] = _mulaw64(value, q)
    residual = code_values[codes[b, p]] - prediction
    if scale.shape[1] > 0:
        residual = residual / scale[b, frame]
    return _mulaw32(residual, q)


@_jit
def generate_block(start, stop, first_frame, codes, signal, log_probs, temperatures,
                   frame_size, ratio, layer_start, in_w, in_b, hh_t, hidden, const_gates, up_w, up_bias,
                   upper_w, code_values, table, mlp_layers, mlp_w, mlp_b, out_w, out_b,
                   lpc, harmonic, prediction_table, source, noise, highpass, highpass_state, scale):
    """Samples start..stop-1 (whole top frames) of every row: `SampleRNN._generate_steps`.

    Per row (R rows), written in place: codes (R, fs0 + length) int64, signal (R, fs0 +
    length) float64 (the unquantized samples), log_probs (R, length) or (R, 0). Per tier
    i (top first): frame_size, ratio, its GRU layers layer_start[i]..layer_start[i+1] of
    in_w (layer 0: the folded frame weights, else `recurrent.input_gate_weights`), in_b,
    hh_t (W_hh^T) and hidden (R, H) (updated); const_gates[i] (R, block frames, 4H),
    up_w[i] and up_bias[i] (R, block frames, r * H_out) (`upsampled_by_sample`), upper_w[i]
    the weight of the gates from the tier above (input part order). Block arrays count
    frames from first_frame, lpc (R, n, order) (reversed) and harmonic (R, n, fs0) from 0
    (last dimension 0: off); source (R, block frames, fs0, H) (H 0: off); noise (R, block
    frames, fs0, q) (q 0 at temperature 0) and temperatures (R, n) float32 (R, 0 at temperature
    0: the argmax). highpass: `model.residual_highpass`'s pole (NaN:
    off), highpass_state (R, 2) float64 its last input and output, carried across blocks;
    scale (R, n) float32 `model.excitation_gain`'s scale of every frame ((R, 0): off).
    """
    rows, tiers = codes.shape[0], len(frame_size)
    fs0, q, k = frame_size[0], table.shape[0] // frame_size[tiers - 1], frame_size[tiers - 1]
    hidden_size = table.shape[1]
    upper_gates = [np.empty((1, rows, 1), np.float32)]     # (r, R, 3H): the input gates from above
    for i in range(1, tiers):
        upper_gates.append(np.empty((ratio[i - 1], rows, 3 * hh_t[layer_start[i]].shape[0]), np.float32))
    ups = np.empty((rows, ratio[tiers - 1] * hidden_size), np.float32)   # the bottom tier's output
    x = np.empty((rows, hidden_size), np.float32)
    prediction = np.zeros(rows, np.float32)
    continuation = np.zeros(rows, np.float64)
    for t in range(start, stop):
        p, frame, j = fs0 + t, t // fs0, t % fs0
        block_frame = frame - first_frame
        for i in range(tiers):
            if t % frame_size[i]:
                continue
            j_above = (t // frame_size[i]) % ratio[i - 1] if i > 0 else 0
            up = _tier_step(i, block_frame, j_above, codes, p, code_values, frame_size, layer_start, in_w,
                            in_b, hh_t, hidden, const_gates, up_w, up_bias, upper_w, upper_gates, ratio)
            if i + 1 < tiers:
                _upper_gates(up, ratio[i], upper_w[i + 1], upper_gates[i + 1])
            else:
                ups = up
        jj = t % ratio[tiers - 1]
        _sample_level(x, ups[:, jj * hidden_size:(jj + 1) * hidden_size], p, codes, table, k, q)
        for b in range(rows):
            prediction[b], continuation[b] = _excitation(x[b], b, p, frame, j, codes, signal, code_values, lpc,
                                                         harmonic, prediction_table, source, block_frame, q)
        logits = _head(x, mlp_layers, mlp_w, mlp_b, out_w, out_b)
        for b in range(rows):
            temperature = temperatures[b, frame] if temperatures.shape[1] > 0 else np.float32(0.0)
            choice = _draw(logits[b], noise[b, block_frame, j], temperature)
            if lpc.shape[2] > 0:
                choice = _emit(b, p, frame, choice, codes, signal, code_values, continuation[b], prediction[b],
                               highpass, highpass_state, scale, q)
            else:
                codes[b, p] = choice
            if log_probs.shape[1] > 0:
                log_probs[b, t] = _log_softmax_at(logits[b], choice)


def _padded(arrays, ndim=None, multiple=4):
    """A tuple of the arrays padded with unused (1, ..., 1) arrays to a multiple of 4 entries:
    numba compiles the kernel once per tuple length, and models of 1-4 tiers, GRU layers
    or MLP layers then share one compiled kernel."""
    ndim = arrays[0].ndim if arrays else ndim
    count = max(multiple, -(-len(arrays) // multiple) * multiple)
    return tuple(arrays) + tuple(np.zeros((1,) * ndim, np.float32) for _ in range(count - len(arrays)))


def _array(tensor, dtype=np.float32):
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=dtype)


def upsampled_by_sample(columns, ratio):
    """(..., H_out * r) in the transposed convolution's layout (column h * r + j, as
    `FrameTier.upsample_matrix`) -> (..., r * H_out), the r output vectors in turn."""
    shape = columns.shape
    return columns.reshape(*shape[:-1], -1, ratio).transpose(-1, -2).reshape(shape)


def _weights(tiers, table, head, vocoder):
    """The arrays that stay fixed during a generation, from the Python step's own objects."""
    from samplernn_pase.models.recurrent import input_order
    layer_start, in_w, in_b, hh_t = [0], [], [], []
    for tier in tiers:
        for index, cell in enumerate(tier.cells):
            in_w.append(_array(tier.frame_gates if index == 0 else cell.input_weight))
            in_b.append(np.zeros(cell.gates.shape[1], np.float32) if index == 0 else _array(cell.input_bias))
            hh_t.append(_array(cell.weight_hh_t))
        layer_start.append(len(in_w))
    hidden_layers, (out_weight, out_bias) = head
    no_table = np.zeros((1, table.shape[1]), np.float32)
    return dict(
        frame_size=np.array([tier.frame_size for tier in tiers], np.int64),
        ratio=np.array([tier.ratio for tier in tiers], np.int64),
        layer_start=np.array(layer_start, np.int64), in_w=_padded(in_w), in_b=_padded(in_b), hh_t=_padded(hh_t),
        up_w=_padded([_array(upsampled_by_sample(tier.up_weight, tier.ratio)) for tier in tiers]),
        upper_w=_padded([_array(input_order(tier.upper_gates_weight, -1)) for tier in tiers]),
        code_values=_array(vocoder.code_values), table=_array(table),
        mlp_layers=len(hidden_layers),
        mlp_w=_padded([_array(weight.t()) for weight, _ in hidden_layers], 2),
        mlp_b=_padded([_array(bias) for _, bias in hidden_layers], 1),
        out_w=_array(out_weight.t()), out_b=_array(out_bias),
        prediction_table=no_table if vocoder.prediction_table is None else _array(vocoder.prediction_table))


def _rows(tiers, vocoder, batch, frames, frame_size):
    """The per-row arrays of a whole generation: lpc (B, n, order) reversed, harmonic
    (B, n, fs0) and the excitation's scale (B, n), empty where off."""
    lpc = _array(vocoder.lpc) if vocoder.lpc is not None else np.zeros((batch, frames, 0), np.float32)
    harmonic = _array(vocoder.harmonic) if vocoder.harmonic is not None \
        else np.zeros((batch, frames, 0), np.float32)
    scale = _array(vocoder.scale) if vocoder.scale is not None else np.zeros((batch, 0), np.float32)
    return lpc, harmonic, scale


def _block(tiers, vocoder, noise, frames, batch, frame_size, q):
    """The per-row arrays of the top frames ``frames`` (a range): constant gates, upsampling
    biases, source terms and the sampling noise (drawn frame by frame, in order)."""
    window = slice(frames.start, frames.stop)
    const_gates = _padded([_array(tier.const_gates[:, window]) for tier in tiers])
    up_bias = _padded([_array(upsampled_by_sample(tier.up_bias[:, window], tier.ratio)) for tier in tiers])
    source = _array(vocoder.source_terms_of(window)) if vocoder.source is not None \
        else np.zeros((batch, len(frames), 0, 0), np.float32)
    noise_block = np.empty((batch, len(frames), frame_size, q if noise is not None else 0), np.float32)
    for index, frame in enumerate(frames if noise is not None else ()):   # in the Python step's order
        noise_block[:, index] = noise(frame).numpy()
    return const_gates, up_bias, source, noise_block


def block_frames(batch, frame_size, q, hidden_size):
    """Top frames per kernel call: the block's noise and source terms within BLOCK_BYTES."""
    return max(1, BLOCK_BYTES // (4 * batch * frame_size * (q + hidden_size)))


def run(tiers, codes, hidden, table, head, temperature, noise, log_probs, vocoder, threads=1):
    """`SampleRNN._generate_steps` by the kernel: same arguments, except ``noise`` (a function
    of the top frame giving its (B, fs0, q) noise, None at temperature 0; ``temperature`` the
    per-frame (B, n) tensor of `per_frame_temperatures`, or None) and ``threads``
    (rows are split over at most this many threads). Fills ``codes`` and ``log_probs``."""
    batch, fs0 = codes.shape[0], tiers[0].frame_size
    frames = (codes.shape[1] - fs0) // fs0
    weights = _weights(tiers, table, head, vocoder)
    q = weights["out_b"].shape[0]
    codes_np = codes.numpy()
    signal = vocoder.code_values[codes].double().numpy()
    if vocoder.lpc is not None:     # the unquantized signal, as the Python step keeps it
        vocoder.signal = torch.from_numpy(signal)
    log_np = log_probs.numpy() if log_probs is not None else np.zeros((batch, 0), np.float32)
    states = _padded([np.array(_array(h), copy=True) for layers in hidden for h in layers])   # h0 is a view
    lpc, harmonic, scale = _rows(tiers, vocoder, batch, frames, fs0)
    temperatures = _array(temperature) if temperature is not None else np.zeros((batch, 0), np.float32)
    highpass = math.nan if vocoder.highpass is None else float(vocoder.highpass)
    highpass_state = np.zeros((batch, 2), np.float64)
    count = max(1, min(threads, batch))
    groups = [slice(g * batch // count, (g + 1) * batch // count) for g in range(count)]
    step = block_frames(batch, fs0, q, table.shape[1])
    windows = [range(first, min(first + step, frames)) for first in range(0, frames, step)]

    def call(window, block, rows):
        const_gates, up_bias, source, noise_block = block
        generate_block(window.start * fs0, window.stop * fs0, window.start, codes_np[rows], signal[rows],
                       log_np[rows], temperatures[rows], hidden=tuple(h[rows] for h in states),
                       const_gates=tuple(a[rows] for a in const_gates), up_bias=tuple(a[rows] for a in up_bias),
                       lpc=lpc[rows], harmonic=harmonic[rows], source=source[rows], noise=noise_block[rows],
                       highpass=highpass, highpass_state=highpass_state[rows], scale=scale[rows], **weights)

    with ThreadPoolExecutor(len(groups)) as pool:
        block = _block(tiers, vocoder, noise, windows[0], batch, fs0, q) if windows else None
        for index, window in enumerate(windows):
            running = [pool.submit(call, window, block, rows) for rows in groups]
            # with several threads the next block's noise is drawn while this one runs
            if count > 1 and index + 1 < len(windows):
                block = _block(tiers, vocoder, noise, windows[index + 1], batch, fs0, q)
            for future in running:
                future.result()
            if count == 1 and index + 1 < len(windows):
                block = _block(tiers, vocoder, noise, windows[index + 1], batch, fs0, q)

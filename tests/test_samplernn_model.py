"""SampleRNN: truncated BPTT state handling, incremental generation, learning."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samplernn_pase.audio.mulaw import mulaw_encode
from samplernn_pase.data.stateful_loader import StatefulLoader
from samplernn_pase.models.samplernn import SampleRNN, SampleRNNConfig, nll_bits, unpack_batch

SCHEMA = Path(__file__).parents[1] / "samplernn_pase/experiment/schema/model_samplernn.json"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run thousands of tiny products: threads only add synchronization
    (on a busy 2-core machine the overfitting test takes 4x longer with two)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny(conditioning="linguistic_lf0", **overrides):
    options = dict(ratios=[4, 2], rnn_hidden_size=[12, 16], rnn_layers=[1, 2], embedding_size=8,
                   mlp_layers=1, conditioning=conditioning, conds_size=6, speaker_embedding_size=4,
                   linguistic_embedding_size=3, num_speakers=3, acoustic_dim=43,
                   linguistic_table_sizes=[5, 7], linguistic_column_tables=[0, 1, 0], linguistic_real_dim=3)
    options.update(overrides)
    return SampleRNN(SampleRNNConfig(**options))


def features(batch, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"acoustic": torch.randn(batch, frames, 43, generator=g),
            "linguistic_categorical": torch.stack([torch.randint(0, 5, (batch, frames), generator=g),
                                                   torch.randint(0, 7, (batch, frames), generator=g),
                                                   torch.randint(0, 5, (batch, frames), generator=g)], -1),
            "linguistic_real": torch.randn(batch, frames, 3, generator=g)}


def test_h0_gets_gradient_only_through_reset_rows():
    torch.manual_seed(0)
    model = tiny()
    batch, frames = 2, 3
    codes = torch.randint(0, 256, (batch, 8 + frames * 8))
    conds, speaker = features(batch, frames), torch.tensor([0, 2])
    _, carried = model(codes, conds, speaker)
    carried = [h.clone().requires_grad_() for h in carried]

    def h0_grads(reset, mask):
        model.zero_grad()
        loss, _ = model.loss(codes, conds, speaker, carried, torch.tensor(reset), torch.tensor(mask))
        loss.backward()
        return [tier.h0.grad.abs().sum().item() for tier in model.tiers]

    assert all(g == 0 for g in h0_grads([False, False], [True, True]))
    assert all(g == 0 for g in h0_grads([True, False], [False, True]))   # reset row masked out
    assert all(g > 0 for g in h0_grads([True, False], [True, False]))
    assert all(h.grad is None or h.grad.abs().sum() == 0 for h in carried)   # carried state is detached


def test_masked_rows_do_not_count():
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 16, 256), torch.randint(0, 256, (3, 16))
    full = nll_bits(logits[:1], targets[:1])
    masked = nll_bits(logits, targets, torch.tensor([True, False, False]))
    assert torch.allclose(full, masked)
    empty = nll_bits(logits.requires_grad_(), targets, torch.zeros(3, dtype=torch.bool))
    empty.backward()
    assert empty.item() == 0 and logits.grad.abs().sum() == 0


def test_chunked_forward_equals_whole_utterance():
    torch.manual_seed(1)
    model = tiny()
    samples = torch.randint(0, 256, (2, 6 * 8))
    conds, speaker = features(2, 6), torch.tensor([1, 0])
    whole = model.log_prob(samples, conds, speaker)
    chunked = model.log_prob(samples, conds, speaker, chunk_frames=4)   # 4 + 2 frames
    assert torch.allclose(whole, chunked, atol=1e-5)


def vocoder_inputs(conds, batch, frames, order=4, context=2, seed=4):
    """A stable random predictor per frame, a random source around every sample and a random
    excitation scale per frame (read only with `excitation_gain`)."""
    g = torch.Generator().manual_seed(seed)
    conds["lpc"] = 0.8 * torch.softmax(torch.randn(batch, frames, order, generator=g), -1)
    conds["source"] = torch.randn(batch, frames, 8, 2 * context + 1, generator=g)
    conds["harmonic"] = 0.1 * torch.randn(batch, frames, 8, generator=g)
    conds["excitation_scale"] = 0.3 * torch.rand(batch, frames, 1, generator=g) + 0.02
    return conds


@pytest.mark.parametrize("conditioning,speaker_vector_size,vocoder", [
    ("linguistic_lf0", 0, False), ("acoustic", 5, False), ("linguistic", 0, False), ("acoustic", 0, True),
    ("acoustic", 0, "gain")])
def test_incremental_generation_matches_teacher_forcing(conditioning, speaker_vector_size, vocoder):
    torch.manual_seed(2)
    options = dict(lpc_order=4, harmonic_source=True, source_context=2,
                   excitation_gain=vocoder == "gain") if vocoder else {}
    model = tiny(conditioning, speaker_vector_size=speaker_vector_size, **options).eval()
    batch, frames = 3, 5
    conds = features(batch, frames)
    if vocoder:
        conds = vocoder_inputs(conds, batch, frames)
    speaker = torch.randn(batch, 5) if speaker_vector_size else torch.tensor([0, 1, 2])
    samples, log_probs = model.generate(conds, speaker, generator=torch.Generator().manual_seed(3),
                                        return_log_probs=True)
    assert samples.shape == (batch, frames * 8) and samples.dtype == torch.int64
    assert len(set(samples.flatten().tolist())) > 10            # it samples, not a constant
    teacher = model.log_prob(samples, conds, speaker)
    assert torch.allclose(log_probs, teacher, atol=1e-4), (log_probs - teacher).abs().max()
    greedy = model.generate(conds, speaker, temperature=0)
    assert torch.equal(greedy, model.generate(conds, speaker, temperature=0))


@pytest.mark.parametrize("highpass", [None, 0.9])
def test_vocoder_generation_is_the_all_pole_filter_of_its_excitation_then_quantized(highpass):
    """A network rigged to sample one residual code r0 every time: the emitted codes must be
    the mu-law codes of y = (harmonic + e) / A(z), scipy's all-pole filter from the look-back
    (decoded silence), quantized once, where the excitation e is r0 (`residual_highpass`
    null) or r0 through scipy's (1 - z^-1) / (1 - a z^-1) from silence: a step that decays as
    a^t, where without the high-pass r0's constant value builds up through 1 / A(z).
    Predicting from the codes instead sends every sample's rounding error back through
    1 / A(z) and drifts off y by several codes."""
    import scipy.signal

    from samplernn_pase.audio.mulaw import mulaw_decode, mulaw_zero

    torch.manual_seed(0)
    model = tiny("acoustic", lpc_order=4, harmonic_source=True, source_context=2,
                 residual_highpass=highpass).eval()
    mlp = model.sample_mlp
    r0 = mulaw_zero() + 3
    with torch.no_grad():
        mlp.output.parametrizations.weight.original0.zero_()
        mlp.output.bias.fill_(-10.0)
        mlp.output.bias[r0] = 10.0
    batch, frames, fs = 2, 40, 8
    conds = vocoder_inputs(features(batch, frames), batch, frames)
    predictor = np.array([1.6, -1.2, 0.5, -0.1])           # one resonant all-pole filter, stable
    assert np.all(np.abs(np.roots(np.concatenate([[1.0], -predictor]))) < 1)
    conds["lpc"] = torch.tensor(predictor, dtype=torch.float32).expand(batch, frames, 4).clone()
    t = np.arange(frames * fs)
    harmonic = 0.01 * np.stack([np.cos(2 * np.pi * t / 20), np.cos(2 * np.pi * t / 13 + 1.0)])
    conds["harmonic"] = torch.tensor(harmonic, dtype=torch.float32).reshape(batch, frames, fs)
    codes = model.generate(conds, torch.tensor([0, 1]), temperature=0)

    a = np.concatenate([[1.0], -predictor])
    silence = float(mulaw_decode(np.array(mulaw_zero())))
    residual = np.full(frames * fs, float(mulaw_decode(np.array(r0))))
    if highpass is not None:
        residual = scipy.signal.lfilter([1.0, -1.0], [1.0, -highpass], residual)
    excitation = harmonic + residual
    y = np.stack([scipy.signal.lfilter([1.0], a, row, zi=scipy.signal.lfiltic([1.0], a, [silence] * 4))[0]
                  for row in excitation])
    assert np.abs(y).max() < 1 and np.abs(y).max() > 0.02       # no clipping, far above the rounding
    expected = mulaw_encode(y)
    agree = np.mean(codes.numpy() == expected)
    assert agree > 0.99, agree                                   # float32 vs float64 at bin edges
    assert np.abs(codes.numpy() - expected).max() <= 1


def test_upsampling_is_a_transposed_convolution():
    torch.manual_seed(0)
    tier = tiny().tiers[0]
    with torch.no_grad():
        tier.upsample_bias.normal_()
    x = torch.randn(2, 5, tier.upsample.weight.shape[0])
    expected = F.conv_transpose1d(x.transpose(1, 2), tier.upsample.weight, stride=tier.ratio)
    expected = expected + tier.upsample_bias.t().repeat(1, 5)
    assert torch.allclose(tier.upsample_frames(x), expected.transpose(1, 2), atol=1e-6)


class OneUtterance:
    def __init__(self, audio, frame_size, frames):
        rng = np.random.default_rng(0)
        self.audio, self.frame_size = audio, frame_size
        self.acoustic = rng.normal(size=(frames, 43)).astype(np.float32)

    def num_frames(self, item):
        return len(self.acoustic)

    def chunk(self, item, start, n):
        fs = self.frame_size
        codes = mulaw_encode(np.concatenate([np.zeros(fs, np.float32), self.audio]))
        return {"input_samples_q": codes[start * fs:(start + n + 1) * fs],
                "acoustic": self.acoustic[start:start + n], "speaker_index": np.int64(0)}


def test_tiny_model_overfits_one_utterance():
    torch.manual_seed(0)
    frames, fs = 24, 8
    t = np.arange(frames * fs)
    audio = (0.6 * np.sin(2 * np.pi * t / 16) * np.sin(2 * np.pi * t / 150)).astype(np.float32)
    source = OneUtterance(audio, fs, frames)
    model = tiny("acoustic", rnn_hidden_size=32, num_speakers=1, embedding_size=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = StatefulLoader(source, [0], batch_size=1, chunk_frames=12, seed=0)
    losses = []
    for epoch in range(40):
        loader.set_epoch(epoch)
        hidden = None
        for batch in loader:
            codes, conds, speaker, reset, mask = unpack_batch(batch)
            loss, hidden = model.loss(codes, conds, speaker, hidden, reset, mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    start, end = np.mean(losses[:4]), np.mean(losses[-4:])
    assert start > 7 and end < 0.2 * start, (start, end)


def test_schema_defaults_build_the_default_config():
    schema = json.loads(SCHEMA.read_text())
    defaults = {k: v["default"] for k, v in schema["properties"].items()}
    assert all("description" in v for v in schema["properties"].values())
    config = SampleRNNConfig.from_dict(defaults, num_speakers=4)
    reference = SampleRNNConfig(num_speakers=4)
    assert config == reference
    assert config.frame_sizes == [80, 20]            # ratios [20, 4] are listed bottom first
    assert SampleRNNConfig(**config.to_dict()) == config


def test_categorical_columns_of_one_kind_share_a_table():
    """Columns 0 and 2 look up table 0, so both train that one table; table 1 serves column 1 only."""
    model = tiny("linguistic")
    mixer = model.mixer
    assert len(mixer.linguistic_tables) == 2
    assert [t.num_embeddings for t in mixer.linguistic_tables] == [5, 7]
    assert mixer.content_size == 3 * 3 + 3 and mixer.mix.in_features == 4 + 12
    conds = features(1, 2)
    conds["linguistic_categorical"] = torch.tensor([[[4, 1, 4], [2, 6, 3]]])
    mixed = mixer(conds, torch.tensor([1]))
    mixed.sum().backward()
    grad = mixer.linguistic_tables[0].weight.grad
    assert set(grad.abs().sum(1).nonzero().flatten().tolist()) == {2, 3, 4}   # rows of columns 0 and 2
    assert set(mixer.linguistic_tables[1].weight.grad.abs().sum(1).nonzero().flatten().tolist()) == {1, 6}
    with pytest.raises(ValueError, match="linguistic_column_tables"):
        SampleRNNConfig(linguistic_table_sizes=[5], linguistic_column_tables=[0, 1])


def test_lpc_order_out_of_range_or_without_acoustic_features_is_refused():
    assert SampleRNNConfig(conditioning="acoustic", lpc_order=0).lpc_order == 0
    with pytest.raises(ValueError, match="lpc_order"):
        SampleRNNConfig(conditioning="acoustic", lpc_order=80)      # the look-back frame is 80
    with pytest.raises(ValueError, match="acoustic"):
        SampleRNNConfig(conditioning="linguistic_lf0", lpc_order=16)

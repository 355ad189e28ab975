"""SampleRNN's compiled generation loop (models/samplernn_kernel.py) against the Python step.

The kernel is the one allowed second copy of the generation step's math: these tests hold
it equal to `SampleRNN._generate_steps` (the definition) on the demo's vocoder config
(GRU 256, lpc_order 16, harmonic source, two MLP layers) and on the same config without
the vocoder options, and check its log-probabilities against teacher forcing."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from samplernn_pase.audio.mulaw import mulaw_encode
from samplernn_pase.models import samplernn, samplernn_kernel
from samplernn_pase.models.samplernn import GENERATION_ENV, SampleRNN, SampleRNNConfig, use_kernel

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not samplernn_kernel.available(), reason="numba is not importable")]

ROOT = Path(__file__).parents[1]
DEFAULT_CONFIG = ROOT / "config.default.json"
SPEAKERS = 4


def demo_model(vocoder=True, **changes):
    """The demo's SampleRNN (config.default.json's model section, with ``changes``), randomly
    initialized; without ``vocoder`` its lpc_order and harmonic source are off (the plain
    SampleRNN)."""
    section = {k: v for k, v in json.loads(DEFAULT_CONFIG.read_text())["model"].items() if k != "type"}
    assert section["lpc_order"] == 16 and section["harmonic_source"] and section["rnn_hidden_size"] == 256
    section.update(changes)
    if not vocoder:
        section.update(lpc_order=0, harmonic_source=False)
    torch.manual_seed(0)
    return SampleRNN(SampleRNNConfig(**section, num_speakers=SPEAKERS)).eval()


def demo_inputs(model, batch, frames, seed=1):
    """bench/samplernn.py's random vocoder inputs (a stable predictor per frame, a source
    window around every sample, a harmonic term), speakers in turn."""
    spec = importlib.util.spec_from_file_location("bench_samplernn", ROOT / "bench" / "samplernn.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.NUM_SPEAKERS == SPEAKERS
    return bench.vocoder_inputs(model.config, batch, frames, "cpu", seed)


def generate(model, conds, speaker, compiled, seed=3, temperature=0.7, signal=False):
    return model.generate(conds, speaker, temperature, generator=torch.Generator().manual_seed(seed),
                          return_log_probs=True, compiled=compiled, return_signal=signal)


@pytest.mark.parametrize("vocoder,gain", [(True, False), (True, True), (False, False)],
                         ids=["lpc16-harmonic", "lpc16-harmonic-gain", "plain"])
def test_kernel_equals_the_python_step(vocoder, gain, monkeypatch):
    """Same codes for the same seed, log-probabilities within 1e-5 of the Python step's and
    of teacher forcing (`log_prob`), with and without `excitation_gain`. Blocks of two top
    frames per kernel call: the noise is drawn frame by frame across calls as the Python
    step draws it."""
    model = demo_model(vocoder, excitation_gain=gain)
    batch, frames = 2, 6
    conds, speaker = demo_inputs(model, batch, frames)
    noise_bytes = 4 * batch * model.frame_size * (model.config.q_levels + model.config.tier_hidden_sizes[-1])
    monkeypatch.setattr(samplernn_kernel, "BLOCK_BYTES", 2 * noise_bytes)
    assert samplernn_kernel.block_frames(batch, model.frame_size, model.config.q_levels,
                                         model.config.tier_hidden_sizes[-1]) == 2
    python_codes, python_log_probs, python_signal = generate(model, conds, speaker, compiled=False, signal=True)
    codes, log_probs, signal = generate(model, conds, speaker, compiled=True, signal=True)
    assert codes.shape == (batch, frames * model.frame_size)
    assert len(set(codes.flatten().tolist())) > 50                 # it samples, not a constant
    assert torch.equal(codes, python_codes)
    # the waveform: the unquantized signal whose mu-law codes were emitted (or the decoded codes)
    assert torch.equal(signal, python_signal)
    assert torch.equal(mulaw_encode(signal, model.config.q_levels), codes)
    if vocoder:
        assert not torch.equal(signal, model.code_values[codes])
    assert (log_probs - python_log_probs).abs().max() < 1e-5
    teacher = model.log_prob(codes, conds, speaker)
    assert (log_probs - teacher).abs().max() < 1e-5, (log_probs - teacher).abs().max()


def test_per_frame_temperatures_in_both_loops():
    """Temperatures by frame (`test.unvoiced_temperature`): a tensor of 0.7 everywhere draws
    exactly what the number 0.7 draws; with 1.0 from the fourth frame on, the first three
    frames are unchanged and the rest differ; the kernel equals the Python step and its
    log-probabilities are teacher forcing's."""
    model = demo_model()
    batch, frames = 2, 6
    conds, speaker = demo_inputs(model, batch, frames)
    voiced = torch.arange(frames).expand(batch, frames) < 3
    assert samplernn.sampling_temperatures(voiced, 0.7) == 0.7
    by_frame = samplernn.sampling_temperatures(voiced, 0.7, 1.0)
    assert by_frame.dtype == torch.float32 and torch.equal(by_frame, torch.tensor([[0.7] * 3 + [1.0] * 3] * 2))
    constant = generate(model, conds, speaker, compiled=True, temperature=torch.full((batch, frames), 0.7))
    assert torch.equal(constant[0], generate(model, conds, speaker, compiled=True)[0])
    codes, log_probs = generate(model, conds, speaker, compiled=True, temperature=by_frame)
    python_codes, _ = generate(model, conds, speaker, compiled=False, temperature=by_frame)
    assert torch.equal(codes, python_codes)
    third = 3 * model.frame_size
    assert torch.equal(codes[:, :third], constant[0][:, :third])
    assert not torch.equal(codes[:, third:], constant[0][:, third:])
    assert (log_probs - model.log_prob(codes, conds, speaker)).abs().max() < 1e-5
    with pytest.raises(ValueError, match="positive"):
        model.generate(conds, speaker, torch.zeros(batch, frames))


def test_kernel_output_is_bitwise_reproducible_whatever_the_threads(monkeypatch):
    """Two runs with one seed give the same bits; so does splitting the rows over two
    threads (each row's sums run in the same order whatever rows share its call), with
    the next frame's noise drawn while the threads run (one frame per kernel call)."""
    model = demo_model()
    conds, speaker = demo_inputs(model, 3, 3, seed=5)
    monkeypatch.setattr(samplernn_kernel, "BLOCK_BYTES", 1)
    first = generate(model, conds, speaker, compiled=True)
    second = generate(model, conds, speaker, compiled=True)
    run, used = samplernn_kernel.run, []

    def two_threads(*args, threads=1):
        used.append(threads)
        run(*args, threads=2)
    monkeypatch.setattr(samplernn_kernel, "run", two_threads)   # torch itself keeps one thread
    threaded = generate(model, conds, speaker, compiled=True)
    assert used == [1]
    for other in (second, threaded):
        assert torch.equal(first[0], other[0]) and torch.equal(first[1], other[1])
    assert torch.equal(first[0], generate(model, conds, speaker, compiled=False)[0])
    greedy = model.generate(conds, speaker, temperature=0, compiled=True)
    assert torch.equal(greedy, model.generate(conds, speaker, temperature=0, compiled=False))


def test_generation_loop_selection(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv(GENERATION_ENV, raising=False)
    assert use_kernel(cpu) and not use_kernel(cuda) and not use_kernel(cpu, compiled=False)
    monkeypatch.setenv(GENERATION_ENV, "python")
    assert not use_kernel(cpu) and use_kernel(cpu, compiled=True)
    monkeypatch.setenv(GENERATION_ENV, "compiled")
    assert use_kernel(cpu) and not use_kernel(cuda)
    monkeypatch.setenv(GENERATION_ENV, "fast")
    with pytest.raises(ValueError, match=GENERATION_ENV):
        use_kernel(cpu)
    monkeypatch.setattr(samplernn, "kernel_module", lambda: None)   # numba not importable
    monkeypatch.delenv(GENERATION_ENV)
    assert not use_kernel(cpu)
    with pytest.raises(ValueError, match="numba"):
        use_kernel(cpu, compiled=True)

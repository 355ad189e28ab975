"""SampleRNN throughput: training and incremental generation, optionally vs. the seed.

    python bench/samplernn.py --hidden-size 1024 --ratios 20 4 --sequence-length 13 \
        --batch-size 8 --threads 2 --device cpu [--baseline-path bench/_seed/samplernn_pase]

    python bench/samplernn.py --config config.default.json [--generate-frames 100]

Prints one JSON line. ``train_samples_per_s``: target samples per second of
truncated-BPTT training steps (forward, backward, Adam) on chunks of
``sequence_length`` frames; ``generate_samples_per_s``: one stream;
``generate_batch_samples_per_s``: ``batch_size`` streams at once.

``--config FILE`` measures generation of that config's model instead (the demo's
vocoder with config.default.json: GRU 256, ``lpc_order`` 16, harmonic source), at its
``test.temperature``, on random features (the speed does not depend on them):
``realtime_factor_one_thread`` (one stream, one thread) and ``realtime_factor_batch16``
(16 streams, 2 threads), seconds of audio per second by the wall clock, by the compiled
loop (`models/samplernn_kernel.py`, the CPU default); the ``per_cpu_second`` figures
divide by the process's CPU time, all threads together (on a shared machine, nearer
what a quiet one gives per busy core), and ``python_step`` holds the same figures for
the Python step (whose loop runs on one thread for up to 16 streams). The load average
before and after is in the JSON.

``--baseline-path DIR`` also measures the seed's published model
(github davidalvarezdlt/samplernn_pase, ``samplernn_pase/model.py``, checked
out into DIR, never committed) under the same settings and reports ratios. The
adapter is the smallest that lets it run on torch 2.13 without its training
framework: a stand-in ``pytorch_lightning`` module whose ``LightningModule`` is
``torch.nn.Module`` (the seed only subclasses it), and the seed's own
``training_step`` body (forward + NLL) written out here because it calls
Lightning's logger. The seed cannot batch generation (``infer`` is one
utterance), so it has no batch figure. Both models use the acoustic
conditioning (43 features) and a speaker embedding table. Both read
``ratios`` bottom tier first ([20, 4]: frame tiers of 20 and 80 samples,
sample level over the last 20 codes), so the same ``--ratios`` gives both
models the same layout.
"""
import argparse
import importlib.util
import json
import math
import os
import sys
import time
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samplernn_pase.audio.mulaw import mulaw_encode  # noqa: E402
from samplernn_pase.models.samplernn import SampleRNN, SampleRNNConfig  # noqa: E402
from samplernn_pase.training.precision import autocast, gradient_scaler  # noqa: E402

NUM_SPEAKERS = 4
SAMPLE_RATE = 16000


def timed(step, min_seconds, min_repeats=2):
    """Seconds per call of ``step`` after one warm-up call."""
    step()
    repeats, start = 0, time.perf_counter()
    while repeats < min_repeats or time.perf_counter() - start < min_seconds:
        step()
        repeats += 1
    return (time.perf_counter() - start) / repeats


def bench_ours(args, device, generate=True):
    """Training (in ``args.precision``'s autocast, as training.precision: fp32 by default;
    fp16 with a GradScaler) and, with ``generate``, generation throughput of our model at
    the given sizes."""
    config = SampleRNNConfig(ratios=args.ratios, rnn_hidden_size=args.hidden_size, rnn_layers=1,
                             conditioning="acoustic", num_speakers=NUM_SPEAKERS)
    model = SampleRNN(config).to(device)
    fs, batch = config.frame_size, args.batch_size
    audio = torch.rand(batch, fs * (args.sequence_length + 1), device=device) * 2 - 1
    codes = mulaw_encode(audio)
    conds = {"acoustic": torch.randn(batch, args.sequence_length, 43, device=device)}
    speaker = torch.arange(batch, device=device) % NUM_SPEAKERS
    mask = torch.ones(batch, dtype=torch.bool, device=device)
    reset = torch.zeros(batch, dtype=torch.bool, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    state = {"hidden": None}
    precision = getattr(args, "precision", "fp32")
    scaler = gradient_scaler(precision, device)

    def train_step():
        with autocast(precision, device):
            loss, state["hidden"] = model.loss(codes, conds, speaker, state["hidden"], reset, mask)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        sync(device)

    train = batch * fs * args.sequence_length / timed(train_step, args.min_seconds)
    if not generate:
        return {"train_samples_per_s": round(train, 1)}
    model.eval()
    frames = args.generate_frames

    def generate(streams):
        gen_conds = {"acoustic": torch.randn(streams, frames, 43, device=device)}
        model.generate(gen_conds, torch.arange(streams, device=device) % NUM_SPEAKERS)
        sync(device)

    one = frames * fs / timed(lambda: generate(1), args.min_seconds, 1)
    many = batch * frames * fs / timed(lambda: generate(batch), args.min_seconds, 1)
    return {"train_samples_per_s": round(train, 1), "generate_samples_per_s": round(one, 1),
            "generate_batch_samples_per_s": round(many, 1)}


def vocoder_inputs(config, streams, frames, device, seed=0):
    """Features for ``streams`` utterances of ``frames`` frames: random acoustic features and,
    as the config asks, a stable predictor per frame (positive, summing to 0.8), a
    harmonic term and a source window around every sample; speakers in turn."""
    g = torch.Generator().manual_seed(seed)
    fs = config.frame_size
    conds = {"acoustic": torch.randn(streams, frames, config.acoustic_dim, generator=g)}
    if config.lpc_order:
        conds["lpc"] = 0.8 * torch.softmax(torch.randn(streams, frames, config.lpc_order, generator=g), -1)
        conds["harmonic"] = 0.05 * torch.randn(streams, frames, fs, generator=g)
        if config.excitation_gain:
            conds["excitation_scale"] = 0.1 * torch.rand(streams, frames, 1, generator=g) + 0.01
    if config.harmonic_source:
        conds["source"] = torch.randn(streams, frames, fs, 2 * config.source_context + 1, generator=g)
    return {k: v.to(device) for k, v in conds.items()}, torch.arange(streams, device=device) % NUM_SPEAKERS


def realtime_factor(model, streams, threads, frames, temperature, device, compiled=None, min_seconds=5.0):
    """Aggregate real-time factor of generating ``streams`` utterances of ``frames`` frames at
    once on ``threads`` threads: seconds of audio per second of the wall clock, and per
    second of the process's CPU time (all threads together: on a shared machine, nearer
    what a quiet one gives per busy core), best of the repeats after a warm-up (which also
    compiles the kernel)."""
    torch.set_num_threads(threads)
    conds, speaker = vocoder_inputs(model.config, streams, frames, device)
    audio = streams * frames * model.frame_size / SAMPLE_RATE
    walls, cpus = [], []

    def once():
        start, cpu = time.perf_counter(), time.process_time()
        model.generate(conds, speaker, temperature, generator=torch.Generator().manual_seed(1), compiled=compiled)
        sync(device)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)

    timed(once, min_seconds, 1)
    return {"wall": round(audio / min(walls[1:]), 3), "cpu": round(audio / min(cpus[1:]), 3),
            "repeats": len(walls) - 1}


def bench_config(args, device):
    """Generation of the model of a config file (its ``model`` section; the demo's vocoder with
    config.default.json): one stream on one thread, 16 streams on 2 threads, each by the
    compiled loop (the default on a CPU) and by the Python step."""
    section = json.loads(Path(args.config).read_text())
    temperature = section.get("test", {}).get("temperature", 1.0)
    model_section = {k: v for k, v in section["model"].items() if k != "type"}
    torch.manual_seed(0)
    model = SampleRNN(SampleRNNConfig(**model_section, num_speakers=NUM_SPEAKERS)).to(device).eval()
    frames = args.generate_frames
    result = {"config": args.config, "model": model_section, "temperature": temperature,
              "generate_frames": frames, "audio_seconds_per_stream": frames * model.frame_size / SAMPLE_RATE,
              "load_average_before": os.getloadavg()}
    one = realtime_factor(model, 1, 1, frames, temperature, device, min_seconds=args.min_seconds)
    batch = realtime_factor(model, 16, 2, frames, temperature, device, min_seconds=args.min_seconds)
    python_frames = max(2, frames // 10)   # the Python step is 10-20x slower
    python_one = realtime_factor(model, 1, 1, python_frames, temperature, device, False, args.min_seconds)
    python_batch = realtime_factor(model, 16, 2, python_frames, temperature, device, False, args.min_seconds)
    result.update(realtime_factor_one_thread=one["wall"], realtime_factor_batch16=batch["wall"],
                  realtime_factor_per_cpu_second_one_thread=one["cpu"],
                  realtime_factor_per_cpu_second_batch16=batch["cpu"],
                  python_step={"realtime_factor_one_thread": python_one["wall"],
                               "realtime_factor_batch16": python_batch["wall"],
                               "realtime_factor_per_cpu_second_one_thread": python_one["cpu"],
                               "realtime_factor_per_cpu_second_batch16": python_batch["cpu"],
                               "generate_frames": python_frames},
                  load_average_after=os.getloadavg())
    return result


def load_seed(path):
    """Imports the seed's model.py with a stand-in for pytorch_lightning."""
    if "pytorch_lightning" not in sys.modules:
        stub = types.ModuleType("pytorch_lightning")
        stub.LightningModule = torch.nn.Module
        sys.modules["pytorch_lightning"] = stub
    spec = importlib.util.spec_from_file_location("seed_samplernn_model", Path(path) / "model.py")
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():   # its torch.nn.utils.weight_norm is deprecated
        warnings.simplefilter("ignore", FutureWarning)
        spec.loader.exec_module(module)
    return module


def bench_seed(args, device):
    module = load_seed(args.baseline_path)
    ratios = args.baseline_ratios or args.ratios
    kwargs = dict(q_levels=256, sequence_length=args.sequence_length, ratios=ratios,
                  conds_speaker_type="embedding", conds_utterance_type="acoustic",
                  conds_speaker_size=15, conds_utterance_linguistic_emb_size=15, conds_size=50,
                  rnn_layers=[1] * len(ratios), rnn_hidden_size=[args.hidden_size] * len(ratios),
                  lr=1e-4, lr_scheduler_patience=3, lr_scheduler_factor=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = module.SampleRNNModel(NUM_SPEAKERS, [50, 10, 20, 10], **kwargs).to(device)
    fs, batch, seq = math.prod(ratios), args.batch_size, args.sequence_length
    audio = torch.rand(batch, fs * (seq + 1), device=device) * 2 - 1
    x, y = audio[:, :seq * fs + fs - 1], audio[:, fs:]
    utt_conds = torch.randn(batch, seq, 43, device=device)
    reset = torch.zeros(batch, dtype=torch.int64)
    info = [{"speaker": {"index": i % NUM_SPEAKERS}} for i in range(batch)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step():   # the seed's training_step without Lightning's logger
        y_hat = model(x, utt_conds, info, reset)
        loss = F.nll_loss(y_hat[reset != 2].view(-1, y_hat.size(2)),
                          model._quantize(y)[reset != 2].view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)

    train = batch * fs * seq / timed(train_step, args.min_seconds)
    model.eval()
    frames = args.baseline_generate_frames

    def generate():
        with torch.no_grad():
            model.infer(torch.randn(1, frames, 43, device=device), {"speaker": {"index": 0}})
        sync(device)

    one = frames * fs / timed(generate, args.min_seconds, 1)
    return {"train_samples_per_s": round(train, 1), "generate_samples_per_s": round(one, 1),
            "generate_batch_samples_per_s": None}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden-size", type=int, default=1024)
    parser.add_argument("--ratios", type=int, nargs="+", default=[20, 4])
    parser.add_argument("--sequence-length", type=int, default=13)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--generate-frames", type=int, default=25,
                        help="frames generated per stream in the generation figures")
    parser.add_argument("--min-seconds", type=float, default=5.0,
                        help="measure each figure for at least this long (after a warm-up)")
    parser.add_argument("--baseline-path", default=None,
                        help="folder holding the seed's model.py: measure it too and report ratios")
    parser.add_argument("--baseline-ratios", type=int, nargs="+", default=None,
                        help="ratios given to the seed (default: --ratios); both read them bottom "
                             "tier first")
    parser.add_argument("--baseline-generate-frames", type=int, default=2,
                        help="frames the seed generates per measurement (it is slow)")
    parser.add_argument("--config", default=None,
                        help="measure the generation of this config file's model instead (e.g. "
                             "config.default.json, the demo's vocoder): realtime_factor_one_thread, "
                             "realtime_factor_batch16 (2 threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.config:
        print(json.dumps(dict(bench_config(args, device), device=str(device), torch=torch.__version__)),
              flush=True)
        return
    result = {"device": str(device), "threads": args.threads, "hidden_size": args.hidden_size,
              "ratios": args.ratios, "sequence_length": args.sequence_length,
              "batch_size": args.batch_size, "torch": torch.__version__,
              "mkl_cbwr": os.environ.get("MKL_CBWR", "default")}
    result.update(bench_ours(args, device))
    if args.baseline_path:
        seed = bench_seed(args, device)
        result["seed"] = dict(seed, ratios=args.baseline_ratios or args.ratios)
        result["speedup"] = {
            key: round(result[key] / seed[key], 2)
            for key in ("train_samples_per_s", "generate_samples_per_s") if seed[key]}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

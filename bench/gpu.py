"""A GPU check that fits in a few minutes of a borrowed GPU: CUDA tests, then throughput.

    make gpu-check                    # = python3 bench/gpu.py
    python3 bench/gpu.py [--dry] [--budget-seconds 420]

Prints one JSON object. It needs only torch and numpy from the Python that runs
it (a GPU machine's own, with whatever CUDA torch it has): it creates no venv,
installs nothing and reaches no network. What it cannot import is skipped and
named in the JSON with the reason (`imports`), e.g. the judges (DNSMOS through
speechmos, Whisper through faster-whisper), which no figure here needs.

With CUDA (the full check):

- ``cuda_tests``: tests/test_cuda.py under pytest (if importable), without the
  shared conftest (it prepares the demo corpus, which needs the audio stack);
- ``samplernn``: SampleRNN at hidden 1024, ratios 20 4 (bench/samplernn.py's
  ``bench_ours``): training target samples/s in fp32, in bf16 autocast and in fp16
  autocast with a GradScaler (training.precision's modes), and
  generation of one stream and of a batch of 64 (``generate_batch_streams``), each also
  as a real-time factor at 16 kHz (``generate_batch_realtime_factor``: the batch's
  aggregate), by the Python step, which is what a GPU runs (the compiled loop of
  models/samplernn_kernel.py is for the CPU);
- ``melnet``: MelNet training frames/s and the seconds of one multiscale
  sampling (bench/melnet.py's ``bench_train`` and ``bench_sample``).

Without CUDA, or with ``--dry``, it is a dry run on the CPU: the CUDA tests are
skipped (the reason is in the JSON) and the same measurements run at tiny
sizes, so that the script itself is checked in well under a minute; its
figures mean nothing. Each section that fails records its error and the rest go
on; a section that would start after ``--budget-seconds`` is skipped, saying so.
The exit status is 0 unless the CUDA tests fail.
"""

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SAMPLE_RATE = 16000
OPTIONAL = {   # module -> what it is for; reported, never required
    "pytest": "runs tests/test_cuda.py",
    "numpy": "every model (required)",
    "speechmos": "judge: DNSMOS (not measured here)",
    "faster_whisper": "judge: Whisper WER (not measured here)",
    "pyworld": "WORLD features (not needed here)",
    "pysptk": "mel-cepstrum (not needed here)",
}
FULL = {
    "samplernn": dict(hidden_size=1024, ratios=[20, 4], sequence_length=13, batch_size=64,
                      generate_frames=25, min_seconds=3.0),
    "melnet": dict(n_mels=64, frames=64, tiers=4, layers=[4, 2, 2, 2], hidden_size=64,
                   gmm_components=10, batch_size=8, train_batch_size=16, train_seconds=5.0,
                   sample_frames=32, sample_repeats=1),
}
DRY = {
    "samplernn": dict(hidden_size=32, ratios=[4, 2], sequence_length=4, batch_size=4,
                      generate_frames=2, min_seconds=0.05),
    "melnet": dict(n_mels=16, frames=8, tiers=3, layers=[1, 1, 1], hidden_size=8,
                   gmm_components=2, batch_size=2, train_batch_size=2, train_seconds=0.05,
                   sample_frames=8, sample_repeats=1),
}


def imports() -> dict:
    """Each optional module: "ok (version)" or "skipped: <why>"."""
    out = {}
    for name, use in OPTIONAL.items():
        try:
            module = importlib.import_module(name)
            out[name] = f"ok ({getattr(module, '__version__', 'version unknown')}): {use}"
        except Exception as error:   # noqa: BLE001 - any import failure is a skip, said as such
            out[name] = f"skipped: {type(error).__name__}: {error}: {use}"
    return out


def cuda_tests(cuda: bool, timeout: float) -> dict:
    if not cuda:
        return {"status": "skipped", "reason": "no CUDA device (dry run)"}
    try:
        import pytest  # noqa: F401
    except ImportError as error:
        return {"status": "skipped", "reason": f"pytest not importable: {error}"}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    try:
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "--noconftest", "-p", "no:cacheprovider",
                              "tests/test_cuda.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {timeout:.0f} s"}
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    return {"status": "passed" if run.returncode == 0 else "failed", "returncode": run.returncode,
            "summary": lines[-1] if lines else "", "seconds": round(time.perf_counter() - start, 1),
            **({} if run.returncode == 0 else {"output_tail": (run.stdout + run.stderr)[-3000:]})}


def samplernn(device, sizes: dict) -> dict:
    import torch

    from samplernn import bench_ours   # bench/samplernn.py

    def args(precision):
        return argparse.Namespace(precision=precision, **{k: sizes[k] for k in (
            "hidden_size", "ratios", "sequence_length", "batch_size", "generate_frames", "min_seconds")})

    from samplernn_pase.models.samplernn import GENERATION_ENV

    # Generation on a GPU runs the Python step (SampleRNN.generate); the dry run on the CPU
    # runs it too (not the compiled CPU loop), so that it checks what the GPU will run.
    previous = os.environ.get(GENERATION_ENV)
    os.environ[GENERATION_ENV] = "python"
    try:
        torch.manual_seed(0)
        fp32 = bench_ours(args("fp32"), device)
    finally:
        if previous is None:
            del os.environ[GENERATION_ENV]
        else:
            os.environ[GENERATION_ENV] = previous
    half = {}
    for precision in ("bf16", "fp16"):
        if device.type == "cuda":
            torch.manual_seed(0)
            half[precision] = bench_ours(args(precision), device, generate=False)["train_samples_per_s"]
        else:   # training.precision "auto" is fp32 on the CPU, where autocast is slow
            half[precision] = f"skipped: {precision} autocast is a CUDA measurement (dry run)"
    return {"sizes": sizes,
            "train_samples_per_s_fp32": fp32["train_samples_per_s"],
            "train_samples_per_s_bf16": half["bf16"],
            "train_samples_per_s_fp16": half["fp16"],
            "generate_samples_per_s": fp32["generate_samples_per_s"],
            "generate_realtime_factor": round(fp32["generate_samples_per_s"] / SAMPLE_RATE, 3),
            "generation_loop": "python step (SampleRNN._generate_steps)",
            "generate_batch_streams": sizes["batch_size"],
            "generate_batch_samples_per_s": fp32["generate_batch_samples_per_s"],
            "generate_batch_realtime_factor": round(fp32["generate_batch_samples_per_s"] / SAMPLE_RATE, 3)}


def melnet(device, sizes: dict) -> dict:
    import torch

    from melnet import bench_sample, bench_train   # bench/melnet.py
    from samplernn_pase.models.melnet import MelNet, MelNetConfig

    torch.manual_seed(0)
    model = MelNet(MelNetConfig(n_mels=sizes["n_mels"], tiers=sizes["tiers"], layers=sizes["layers"],
                                hidden_size=sizes["hidden_size"], gmm_components=sizes["gmm_components"],
                                chunk_frames=sizes["frames"])).to(device)
    args = argparse.Namespace(**sizes)
    frames_per_s, steps = bench_train(model, args, device)
    args.frames = sizes["sample_frames"]
    seconds = bench_sample(model, args, device)
    return {"sizes": sizes, "train_frames_per_s": round(frames_per_s, 1), "train_steps": steps,
            "sample_seconds": round(seconds, 3),
            "sample_values_per_s": round(sizes["batch_size"] * sizes["sample_frames"] * sizes["n_mels"]
                                         / seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU even with CUDA")
    parser.add_argument("--budget-seconds", type=float, default=420.0,
                        help="no section starts after this many seconds (the whole check: < 8 minutes)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = {"python": platform.python_version(), "imports": imports()}
    try:
        import torch
    except ImportError as error:
        result["error"] = f"torch not importable: {error}"
        print(json.dumps(result), flush=True)
        return 1
    cuda = torch.cuda.is_available() and not args.dry
    device = torch.device("cuda" if cuda else "cpu")
    result.update(torch=torch.__version__, cuda=torch.version.cuda, mode="cuda" if cuda else "dry",
                  device=torch.cuda.get_device_name(0) if cuda else "cpu",
                  dry_reason=None if cuda else ("--dry" if args.dry else "no CUDA device"))
    if not cuda:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    sizes = FULL if cuda else DRY
    tests_ok = True
    sections = [("cuda_tests", lambda: cuda_tests(cuda, timeout=max(30.0, args.budget_seconds / 2))),
                ("samplernn", lambda: samplernn(device, sizes["samplernn"])),
                ("melnet", lambda: melnet(device, sizes["melnet"]))]
    for name, section in sections:
        elapsed = time.perf_counter() - start
        if elapsed > args.budget_seconds:
            result[name] = {"status": "skipped", "reason": f"budget of {args.budget_seconds:.0f} s spent"}
            continue
        try:
            result[name] = section()
        except Exception as error:   # noqa: BLE001 - one broken section must not hide the others
            result[name] = {"status": "error", "error": f"{type(error).__name__}: {error}",
                            "traceback": traceback.format_exc()[-2000:]}
        if name == "cuda_tests":
            tests_ok = result[name]["status"] != "failed"
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result), flush=True)
    return 0 if tests_ok else 1


if __name__ == "__main__":
    sys.exit(main())

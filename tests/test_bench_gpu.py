"""bench/gpu.py (`make gpu-check`) in its dry mode on the CPU: one JSON object, the CUDA
parts skipped with a reason, every measurement run at tiny sizes."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_prints_its_json():
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["mode"] == "dry" and result["dry_reason"] == "--dry"
    assert result["cuda_tests"]["status"] == "skipped" and "CUDA" in result["cuda_tests"]["reason"]
    assert set(result["imports"]) >= {"pytest", "speechmos", "faster_whisper"}
    assert all(v.startswith(("ok", "skipped: ")) for v in result["imports"].values())
    samplernn, melnet = result["samplernn"], result["melnet"]
    assert "error" not in samplernn and "error" not in melnet, (samplernn, melnet)
    assert samplernn["train_samples_per_s_fp32"] > 0
    assert samplernn["train_samples_per_s_bf16"].startswith("skipped")
    assert samplernn["train_samples_per_s_fp16"].startswith("skipped")
    assert samplernn["generate_batch_streams"] == 4 and samplernn["generation_loop"].startswith("python")
    # the real-time factors are the sample rates over 16 kHz
    assert abs(samplernn["generate_batch_realtime_factor"]
               - samplernn["generate_batch_samples_per_s"] / 16000) < 1e-3
    assert melnet["train_frames_per_s"] > 0 and melnet["sample_seconds"] > 0
    assert result["seconds"] < 60

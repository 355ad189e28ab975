"""Benchmark of GPT-prior sampling: the key/value cache against recomputing the prefix.

    python bench/gpt_sampling.py --lengths 265 1060 --threads 1

prints one JSON line. For every length N (codes per sequence; the seed's is
265 = 5 frequency rows x 53 time columns, and 4x that), one model (block_size
= the longest length, so no window slides in either path) samples N codes
after the condition prefix in two ways, in the same run:

- `cached`: `models.gpt.generate`, one prefill then one cached step per code;
- `recompute`: the loop of the seed (and of nanoGPT's `generate`): the full
  forward pass over the prefix and every code so far, for every new code.

Both draw from the same generator seed with the same temperature / top-k /
top-p, so `same_codes` says whether they sampled the same sequence (they do
unless float rounding flips a draw). `speedup` is recompute / cached wall time,
`speedup_cpu_time` the same in CPU seconds of the process (steadier on a
shared CPU).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samplernn_pase.models.gpt import GPT, GPTConfig, generate, sample_next  # noqa: E402


@torch.no_grad()
def generate_recomputing(model, conditions, num_codes, temperature, top_k, top_p, generator):
    """The baseline: a full pass over everything so far for each new code."""
    codes = conditions.new_zeros(conditions.shape[0], 0)
    for _ in range(num_codes):
        # model(codes) predicts codes[:, i] at row i; a placeholder last code gets the next one.
        logits = model(torch.cat([codes, codes.new_zeros(codes.shape[0], 1)], 1), conditions)[:, -1]
        code = sample_next(logits, temperature, top_k, top_p, generator)
        codes = torch.cat([codes, code[:, None]], 1)
    return codes


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device, repeats):
    """(best wall seconds, best CPU seconds of this process, of `repeats` runs; result of the last).

    CPU seconds are what to compare on a shared CPU (with --threads 1 they do not
    grow when other processes compete for the cores); on CUDA, wall seconds.
    """
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        sync(device)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[265, 1060])
    parser.add_argument("--codebook-size", type=int, default=128)
    parser.add_argument("--column-height", type=int, default=5)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--num-speakers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each path; the best counts")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = GPTConfig(codebook_size=args.codebook_size, column_height=args.column_height,
                       block_size=max(args.lengths), num_speakers=args.num_speakers,
                       n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(config).to(device).eval()
    conditions = model.condition_tokens(torch.arange(args.batch_size) % args.num_speakers)
    sampling = (args.temperature, args.top_k, args.top_p)

    def cached(n):
        return generate(model, conditions, n, None, *sampling,
                        generator=torch.Generator(device=device).manual_seed(1))

    def recompute(n):
        return generate_recomputing(model, conditions, n, *sampling,
                                    generator=torch.Generator(device=device).manual_seed(1))

    cached(8), recompute(8)   # warm-up
    results = []
    for n in args.lengths:
        cached_s, cached_cpu_s, cached_codes = timed(lambda: cached(n), device, args.repeats)
        recompute_s, recompute_cpu_s, recompute_codes = timed(lambda: recompute(n), device,
                                                              args.repeats)
        results.append({
            "codes": n, "cached_s": round(cached_s, 4), "recompute_s": round(recompute_s, 4),
            "cached_cpu_s": round(cached_cpu_s, 4), "recompute_cpu_s": round(recompute_cpu_s, 4),
            "cached_codes_per_s": round(n * args.batch_size / cached_s, 1),
            "recompute_codes_per_s": round(n * args.batch_size / recompute_s, 1),
            "speedup": round(recompute_s / cached_s, 2),
            "speedup_cpu_time": round(recompute_cpu_s / cached_cpu_s, 2),
            "same_codes": bool(torch.equal(cached_codes, recompute_codes))})
    print(json.dumps({
        "benchmark": "gpt_sampling", "results": results,
        "model": {"n_layer": config.n_layer, "n_head": config.n_head, "n_embd": config.n_embd,
                  "codebook_size": config.codebook_size, "block_size": config.block_size,
                  "prefix_length": config.prefix_length,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "batch_size": args.batch_size, "temperature": args.temperature, "top_k": args.top_k,
        "top_p": args.top_p, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "device": str(device), "torch": torch.__version__}))


if __name__ == "__main__":
    main()

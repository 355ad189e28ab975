"""One benchmark, before and after a change, in one run: interleaved rounds, best (or median) of each.

    python bench/compare.py --before /work/wt/before [--rounds 3] [--statistic median] -- \\
        bench/samplernn.py --hidden-size 1024 --ratios 20 4 --sequence-length 13 \\
        --batch-size 8 --threads 2 --device cpu --baseline-path bench/_seed/samplernn_pase

runs the script (a path inside the checkouts) from the "before" checkout and
from this one, alternately, each in its own checkout (its package imported,
relative paths resolved there), and prints one JSON line: the best figure of
each side over the rounds (rates, `*_per_s` or `*_per_second`: the highest;
times, `*seconds*` or `*_s`: the lowest; nested figures flattened with dots; `--statistic median`: the
median of the rounds instead), and `after_vs_before`, the ratio of the two
sides' figures oriented so that above 1 is faster. Each
round's JSON goes to stderr as it comes. On a shared machine the load drifts
within minutes; alternating the two sides gives both the same drift, so the
ratios are steadier than the figures, and a baseline that both sides measure
(the seed's figures) shows how much drift is left.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

AFTER = Path(__file__).resolve().parents[1]


def flatten(result: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in result.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = dict(enumerate(value))       # a list of results: one figure each, by position
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def is_time(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return ("seconds" in last or last.endswith("_s")) and not is_rate(key)


def is_rate(key: str) -> bool:
    """`*_per_s` or `*_per_second`, the last name or one above it (`mels_per_s.deep`)."""
    return any(part.endswith(("_per_s", "_per_second")) for part in key.split("."))


def run_once(checkout: Path, script: list[str], env: dict) -> dict:
    """The script's last JSON line, run from `checkout` with its package first on the path."""
    result = subprocess.run([sys.executable, *script], cwd=checkout, capture_output=True, text=True,
                            env={**env, "PYTHONPATH": str(checkout)})
    if result.returncode != 0:
        raise SystemExit(f"{checkout}: {' '.join(script)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summary(rounds: list[dict], statistic: str = "best") -> dict:
    """Per figure, the best (or the median) value over the rounds; other fields from the last round."""
    flat = [flatten(r) for r in rounds]
    out = dict(flat[-1])
    for key in out:
        values = [f[key] for f in flat if isinstance(f.get(key), (int, float)) and f.get(key) is not None]
        if values and statistic == "median" and (is_rate(key) or is_time(key)):
            out[key] = statistics.median(values)
        elif values and is_rate(key):
            out[key] = max(values)
        elif values and is_time(key):
            out[key] = min(values)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the code before the change")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--statistic", choices=["best", "median"], default="best",
                        help="each side's figure over the rounds (median: for a load that varies both ways)")
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="environment for both sides (e.g. MKL_CBWR=AUTO,STRICT)")
    parser.add_argument("script", nargs=argparse.REMAINDER,
                        help="-- then the benchmark script (path inside the checkouts) and its arguments")
    args = parser.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        parser.error("give the benchmark after --")
    env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
    sides = {"before": args.before.resolve(), "after": AFTER}
    rounds = {side: [] for side in sides}
    for number in range(args.rounds):
        for side, checkout in sides.items():
            rounds[side].append(run_once(checkout, script, env))
            print(f"round {number + 1} {side}: {json.dumps(rounds[side][-1])}", file=sys.stderr, flush=True)
    before, after = summary(rounds["before"], args.statistic), summary(rounds["after"], args.statistic)
    ratios = {}
    every = [flatten(r) for side in rounds.values() for r in side]
    for key, value in after.items():
        old = before.get(key)
        if len({json.dumps(f.get(key)) for f in every}) == 1:
            continue                              # a setting (audio_seconds), the same in every round
        if "speedup" in key or not (isinstance(value, (int, float)) and isinstance(old, (int, float))
                                    and value and old):
            continue
        if is_rate(key):
            ratios[key] = round(value / old, 3)
        elif is_time(key):
            ratios[key] = round(old / value, 3)
    print(json.dumps({"script": script, "rounds": args.rounds, "statistic": args.statistic, "env": dict(item.split("=", 1) for item in args.env),
                      "before": before, "after": after, "after_vs_before": ratios}))


if __name__ == "__main__":
    main()

"""Do PASE seeds tell speakers apart? Nearest-seed speaker identification on held-out audio.

    python bench/pase_speaker_id.py [--workspace DIR] [--data-path data] [--pase-epochs 10] [--threads 2]

With the real commands and the real runner code:

1. `init` + `train` a PASE experiment from `configs/pase.json` for
   `--pase-epochs` epochs in `<workspace>/experiments/pase` (reused when it is
   already there: the same workspace as bench/pase_seed_duration.py works).
2. Enrollment: each speaker's seed from its train split (`seed_seconds` of
   audio, as `init` gives SampleRNN; data/speaker_seeds.py speaker_train_seeds).
   Probes: every validation and test utterance, embedded alone
   (held_out_identification). Accuracy of the nearest seed by cosine, chance,
   and the mean cosine of a probe to its own speaker's seed and to the others'.
3. The same for the untrained encoder (the same architecture, initialized
   with the experiment's seed): eSpeak voices differ in pitch and timbre so
   much that random features may already separate them, and for Resemblyzer
   (the independent speaker encoder; enrollment: centroid of the train
   utterances' embeddings), the yardstick.

Prints one JSON line.
"""

import argparse
import json
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pase_seed_duration import PASE_NAME, open_workspace, pase_config  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--data-path", type=Path, default=Path("data"))
    parser.add_argument("--pase-epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from samplernn_pase.data.store import UtteranceStore
    from samplernn_pase.experiment.folder import Experiment
    from samplernn_pase.metrics.speaker import resemblyzer_embedding, speaker_identification
    from samplernn_pase.models.pase import PASE, PASEConfig
    from samplernn_pase.data.speaker_seeds import speaker_train_seeds
    from samplernn_pase.experiment.weights import load_pase
    from samplernn_pase.runners.pase import held_out_identification

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    workspace, data_path, cli = open_workspace(args, "pase_speaker_id_")
    train_seconds = cli.init_and_train(PASE_NAME, pase_config(args))

    experiment = Experiment(cli.experiments_path, PASE_NAME)
    config, index = experiment.config(), experiment.data_index()
    epoch = experiment.resolve_epoch(None)
    store = UtteranceStore(index, experiment.normalization(), data_path, cache_size=len(index["utterances"]))

    def audio(utterance_id):
        return store.load(utterance_id).audio

    speakers = sorted(s["id"] for s in index["speakers"])
    seconds = config["model"]["seed_seconds"]
    torch.manual_seed(config["seed"])
    untrained = PASE(PASEConfig.from_dict({k: v for k, v in config["model"].items() if k != "type"})).eval()
    trained = load_pase(cli.experiments_path, PASE_NAME, epoch)
    results = {}
    for name, model in (("pase_untrained", untrained), (f"pase_epoch_{epoch}", trained)):
        seeds = speaker_train_seeds(model, index, audio, speakers, seconds)
        results[name] = held_out_identification(model, index, audio, seeds)

    rate = index["sample_rate"]
    enrollment = {s: [resemblyzer_embedding(audio(u["id"]), rate) for u in index["utterances"]
                      if u["speaker"] == s and u["split"] == "train"] for s in speakers}
    probes = [(u["speaker"], resemblyzer_embedding(audio(u["id"]), rate)) for u in index["utterances"]
              if u["split"] in ("validation", "test")]
    results["resemblyzer"] = speaker_identification(enrollment, probes)
    print(json.dumps({
        "bench": "pase_speaker_id",
        "command": "python bench/pase_speaker_id.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"workspace": str(workspace), "pase_epochs": epoch, "seed_seconds": seconds,
                     "pase_model": {k: config["model"][k] for k in ("embedding_dim", "sinc_channels",
                                                                     "conv_channels")},
                     "speakers": len(speakers), "threads": args.threads},
        "results": {k: {key: (round(v, 6) if isinstance(v, float) else v) for key, v in r.items()}
                    for k, r in results.items()},
        "runtime_s": {"train": round(train_seconds, 1), "total": round(time.perf_counter() - started, 1)},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

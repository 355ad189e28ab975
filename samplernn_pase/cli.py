"""The command line: `python -m samplernn_pase [global] <command> [args]`.

Each command is a small function below. Errors a user can cause are raised
as UserError anywhere in the package and printed here as one line on stderr
with a non-zero exit status, never as a traceback.
"""

import argparse
import contextlib
import functools
import json
import logging
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .errors import UserError

LOGGER_NAME = "samplernn_pase"


def add_global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command takes. They are accepted before or after the command:
    the copy on each command's parser has no defaults, so it only overrides what was given."""
    def default(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--experiment-name", default=default(None),
                        help="folder under --experiments-path (required, except for "
                             "`tensorboard --compare`, `report --compare` and `synthesize --release`)")
    parser.add_argument("--experiments-path", type=Path, default=default(Path("experiments")))
    parser.add_argument("--data-path", type=Path, default=default(Path("data")))
    parser.add_argument("--verbose", action="store_true", default=default(False),
                        help="log to stderr too")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m samplernn_pase",
        description="Experiment manager for neural speech generation: SampleRNN, MelNet, PASE, "
                    "mel VQ-VAE + GPT prior, conditional WGAN-GP, acoustic model (text to speech).")
    parser.add_argument("--version", action="version", version=f"samplernn_pase {__version__}")
    add_global_options(parser, defaults=True)
    global_options = argparse.ArgumentParser(add_help=False)
    add_global_options(global_options, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>",
                                     parser_class=functools.partial(argparse.ArgumentParser,
                                                                    parents=[global_options]))

    init = commands.add_parser("init", help="create an experiment from a config")
    init.add_argument("--config-path", type=Path, required=True)
    init.add_argument("--config-schema-path", type=Path, default=None,
                      help="folder of schema fragments replacing the shipped ones")
    init.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                      help="override one config field before the check (repeatable): a dotted key "
                           "(training.batch_size=32), a JSON value or else a string")
    init.add_argument("--init-from", metavar="EXPERIMENT", default=None,
                      help="start from this experiment's model weights (not its optimizer): same "
                           "family and architecture; speaker rows mapped by speaker id")
    init.add_argument("--init-epoch", type=epoch_or_best, default=None, metavar="N|best",
                      help="the --init-from checkpoint: an epoch, or best (default: the latest)")
    init.add_argument("--seed", type=int, default=None)
    init.add_argument("--num-workers", type=int, default=None,
                      help="feature-extraction processes (default: all cores)")

    info = commands.add_parser("info", help="config, data summary, utterance ids and checkpoints")
    info.add_argument("--split", choices=["train", "validation", "test", "all"], default="test",
                      help="whose utterance ids to list, per speaker (default: test)")

    train = commands.add_parser("train", help="train (resumes from the last checkpoint)")
    train.add_argument("--epoch", type=int, default=None,
                       help="restart from this epoch checkpoint instead of the latest one")
    train.add_argument("--max-epochs", type=int, default=None,
                       help="the last epoch to train, counted from the experiment's first epoch "
                            "(not from this run's); default: training.max_epochs")
    train.add_argument("--device", default="cpu")
    train.add_argument("--num-workers", type=int, default=0,
                       help="batches prepared ahead in a background thread (0: none)")
    train.add_argument("--log-period", type=int, default=None)
    train.add_argument("--tier", type=int, default=None, help="MelNet: train only this tier")
    add_rendering_commands(commands)
    add_viewing_commands(commands)
    return parser


def epoch_or_best(text: str) -> int | str:
    if text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an epoch number nor best") from None


def add_rendering_commands(commands) -> None:
    """The commands that render audio: test, test_sample, create_release, synthesize."""
    test = commands.add_parser("test", help="render audio and metrics for a checkpoint")
    test.add_argument("--epoch", type=int, default=None)
    test.add_argument("--device", default="cpu")
    test.add_argument("--speakers", choices=["modeling", "adaptation"], default="modeling")
    test.add_argument("--seed", type=int, default=None,
                      help="another draw: seed of the rendering's random draws, with the epoch "
                           "(default: the experiment's, config.json `seed`); its results go to "
                           "results/epoch-N/seed-S/ and not to TensorBoard")

    test_sample = commands.add_parser("test_sample", help="render one utterance")
    test_sample.add_argument("--sample", required=True, help="utterance id (see `info`)")
    test_sample.add_argument("--epoch", type=int, default=None)
    test_sample.add_argument("--device", default="cpu")

    release = commands.add_parser("create_release",
                                  help="one self-contained file for sharing and `synthesize`")
    release.add_argument("--epoch", type=int, required=True)

    synthesize = commands.add_parser(
        "synthesize", help="render an utterance from a checkpoint or from a release file alone")
    synthesize.add_argument("--release", type=Path, default=None,
                            help="a file written by create_release (then no --experiment-name "
                                 "is needed)")
    synthesize.add_argument("--epoch", type=int, default=None,
                            help="checkpoint of the experiment (default: the latest)")
    rendered = synthesize.add_mutually_exclusive_group(required=True)
    rendered.add_argument("--utterance",
                          help="id of a test utterance whose conditioning is rendered "
                               "(see `info`; a release holds the config's test utterances)")
    rendered.add_argument("--features", type=Path,
                          help="an .npz of features as `init` writes for each utterance (the "
                               "file data.json's `features` names under --data-path): `acoustic` "
                               "(frames x acoustic_fields, un-normalized), optionally `audio` "
                               "(frames x hop_length samples, the reference), and the phone-level labels "
                               "phone_index, position_in_phone, phone_duration, phone_categorical, "
                               "phone_real for linguistic conditioning; needs --speaker")
    rendered.add_argument("--text",
                          help="new text spoken by an acoustic experiment (model.type \"acoustic\"): "
                               "eSpeak NG gives its labels only, the duration model the timing, the "
                               "acoustic model the WORLD features, the vocoder the waveform; needs "
                               "--speaker (a demo speaker)")
    rendered.add_argument("--espeak-text",
                          help="SampleRNN experiments: re-vocode eSpeak NG's own reading of new text "
                               "in the speaker's demo voice (labels, phone durations, log-F0 and the "
                               "other WORLD features of that reading, as `init` makes them for the "
                               "corpus); needs --speaker (a demo speaker)")
    synthesize.add_argument("--speaker", default=None,
                            help="speaker id (see `info`) for --features, --text and --espeak-text")
    synthesize.add_argument("--output-dir", type=Path, default=None,
                            help="default: results/epoch-N/synthesized of the experiment, or "
                                 "./synthesized for a release")
    synthesize.add_argument("--device", default="cpu")
    synthesize.add_argument("--seed", type=int, default=None,
                            help="seed of the rendering's random draws, with the epoch (default: the "
                                 "experiment's, config.json `seed`, as `test` renders: the same "
                                 "command renders the same audio)")


def add_viewing_commands(commands) -> None:
    """The commands that show experiments: tensorboard, report."""
    board = commands.add_parser("tensorboard", help="serve the TensorBoard logs")
    board.add_argument("--port", type=int, default=6006)
    board.add_argument("--host", default="127.0.0.1")
    board.add_argument("--compare", action="store_true", help="all experiments side by side")

    report = commands.add_parser("report", help="write report.html, or compare experiments")
    report.add_argument("--compare", nargs="*", metavar="NAME", default=None,
                        help="one page comparing these experiments (all when no name is given)")
    report.add_argument("--output", type=Path, default=None,
                        help="comparison page (default: <experiments-path>/compare.html)")


def setup_logging(log_path: Path | None, verbose: bool, is_main: bool = True) -> logging.Logger:
    log = logging.getLogger(LOGGER_NAME)
    log.setLevel(logging.DEBUG)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    if log_path is not None and is_main:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_path)
        file_handler.setFormatter(formatter)
        file_handler.setLevel(logging.DEBUG)
        log.addHandler(file_handler)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(message)s"))
    # Without --verbose: warnings, and the records marked `extra={"summary": True}` (one
    # line per epoch and per test), so that a run shows its progress under a pipe too.
    stream.setLevel(logging.INFO if is_main else logging.WARNING)
    stream.addFilter(lambda record: verbose or record.levelno >= logging.WARNING
                     or getattr(record, "summary", False))
    log.addHandler(stream)
    log.propagate = False
    return log


# --- commands ---------------------------------------------------------------------


def cmd_init(args, experiment) -> None:
    from .experiment.config import SCHEMA_DIR, apply_overrides, read_config_file, validate_config
    from .experiment.folder import atomic_save_npz, atomic_write_json
    from .data.prepare import prepare_data, require_data_path
    from .runners import runner_class

    config = apply_overrides(read_config_file(args.config_path), args.overrides)
    source = " ".join([str(args.config_path)] + [f"--set {text}" for text in args.overrides])
    if args.init_epoch is not None and args.init_from is None:
        raise UserError("--init-epoch: only with --init-from EXPERIMENT")
    if args.init_from is not None:
        config["init_from"] = {"experiment": args.init_from, "epoch": args.init_epoch}
        source += f" --init-from {args.init_from}"
    config = validate_config(config, source, args.config_schema_path or SCHEMA_DIR,
                             experiments_path=args.experiments_path)   # before any corpus work
    if config.get("init_from"):
        config["init_from"] = resolved_init_from(args.experiments_path, config)
    if args.seed is not None:
        config["seed"] = args.seed
    config["package_version"] = __version__
    require_data_path(config["data"], args.data_path)   # made here for the demo corpus
    with experiment.creating() as staging:
        log = setup_logging(staging / "verbose.log", args.verbose)
        log.info("init %s from %s (samplernn_pase %s)", experiment.name, source, __version__)
        workers = args.num_workers or os.cpu_count() or 1
        data_index, normalization = prepare_data(config["data"], args.data_path, config["seed"],
                                                 workers, log)
        extra = runner_class(config["model"]["type"]).prepare_experiment(
            config, data_index, normalization, args.experiments_path, args.data_path, log)
        normalization.update(extra.pop("normalization.npz", {}))   # a family's own statistics
        atomic_write_json(staging / "config.json", config)
        atomic_write_json(staging / "data.json", data_index)
        atomic_save_npz(staging / "normalization.npz", normalization)
        for name, arrays in extra.items():
            atomic_save_npz(staging / name, arrays)
        if config.get("init_from"):
            write_initial_weights(args, experiment, staging, config["init_from"], log)
    setup_logging(experiment.log_path, args.verbose)
    print(f"experiment created: {experiment.root}")


def resolved_init_from(experiments_path: Path, config: dict) -> dict:
    """config.json's `init_from`: the source experiment, its epoch as a number, the checkpoint."""
    from .experiment.weights import named_experiment
    record = config["init_from"]
    source, _, epoch = named_experiment(experiments_path, record["experiment"], record.get("epoch"),
                                        config["model"]["type"], "init_from")
    return {"experiment": record["experiment"], "epoch": epoch,
            "checkpoint": str(source.checkpoint_path(epoch))}


def write_initial_weights(args, experiment, staging: Path, record: dict, log) -> None:
    """`init --init-from`: the source checkpoint's model weights, its speaker rows mapped to this
    experiment's speakers (experiment/weights.py), into initial_weights.pt, which `train` loads
    before the first checkpoint. The model is built here as `train` builds it, so that a
    different architecture stops `init` (one line naming the first differing parameter)."""
    from .experiment.folder import Experiment, atomic_torch_save
    from .experiment.weights import checkpoint_weights, transferred_weights
    from .training.distributed import parse_device
    staged = Experiment(args.experiments_path, experiment.name, root=staging)
    runner = make_runner(args, staged, parse_device("cpu"))
    source = Experiment(args.experiments_path, record["experiment"])
    weights = transferred_weights(
        checkpoint_weights(source, record["epoch"]), source.data_index()["speakers"],
        runner.model.state_dict(), staged.data_index()["speakers"], runner.speaker_tables(),
        f"--init-from {record['experiment']} (epoch {record['epoch']})", runner.data_speaker_tables())
    atomic_torch_save(staged.initial_weights_path, {"model": weights, "init_from": record})
    log.info("initial weights from %s (speaker tables mapped by id: %s)", record["checkpoint"],
             ", ".join(runner.speaker_tables()) or "none")


def cmd_info(args, experiment) -> None:
    config = experiment.config()
    index = experiment.data_index()
    print(f"experiment: {experiment.root}")
    print("config:")
    print(json.dumps(config, indent=2))
    print("data:")
    speakers = index["speakers"]
    for speaker_set in ("modeling", "adaptation"):
        members = [s for s in speakers if s["set"] == speaker_set]
        genders = {}
        for speaker in members:
            genders[speaker.get("gender") or "?"] = genders.get(speaker.get("gender") or "?", 0) + 1
        described = ", ".join(f"{n} {g}" for g, n in sorted(genders.items()))
        print(f"  {speaker_set} speakers: {len(members)} ({described})")
    for split in ("train", "validation", "test"):
        utterances = [u for u in index["utterances"] if u["split"] == split]
        hours = sum(u["seconds"] for u in utterances) / 3600
        print(f"  {split}: {len(utterances)} utterances, {hours:.3f} h")
    report = index.get("report", {})
    if report:
        dropped = sum(len(v) for v in report.get("dropped", {}).values())
        print(f"  files kept: {report.get('kept')}, dropped: {dropped}")
    print_utterance_ids(index, args.split)
    checkpoints = experiment.checkpoint_index()
    epochs = experiment.checkpoint_epochs()
    print("checkpoints:" if epochs else "checkpoints: none")
    for epoch in epochs:
        entry = checkpoints["epochs"].get(str(epoch), {})
        best = "  (best)" if checkpoints.get("best_epoch") == epoch else ""
        loss = entry.get("validation_loss")
        loss_text = f"{loss:.6f}" if isinstance(loss, (int, float)) else "?"
        print(f"  epoch {epoch}: validation loss {loss_text}, iteration {entry.get('iteration')}{best}")
    if experiment.partial_checkpoint_path.is_file():
        print(f"  partial (mid-epoch): {experiment.partial_checkpoint_path}")


def print_utterance_ids(index: dict, split: str) -> None:
    """The ids `test_sample --sample` and `synthesize --utterance` take, per split and speaker."""
    splits = ("train", "validation", "test") if split == "all" else (split,)
    for name in splits:
        print(f"utterances ({name} split; `info --split all` lists every split):"
              if split != "all" else f"utterances ({name} split):")
        for speaker in index["speakers"]:
            ids = [u["id"] for u in index["utterances"]
                   if u["split"] == name and u["speaker"] == speaker["id"]]
            if ids:
                print(f"  {speaker['id']} ({speaker['set']}): {' '.join(ids)}")


def make_runner(args, experiment, device, dist=None, num_workers=0, from_release=False):
    """The experiment's runner (model built, seeded) on `device`, a torch.device
    (runners/synthesis.py, which the Python API shares)."""
    from .runners.synthesis import make_runner as build
    return build(experiment, args.data_path, device, dist, num_workers, from_release)


def trained_runner(args, experiment, epoch: int, device, from_release=False):
    """The runner of `make_runner` with the weights of the epoch's checkpoint (test,
    test_sample, synthesize)."""
    from .runners.synthesis import trained_runner as build
    return build(experiment, epoch, args.data_path, device, from_release)


def cmd_train(args, experiment) -> None:
    from .training import distributed
    from .training.loop import Trainer

    device, dist = distributed.setup(args.device)
    log = setup_logging(experiment.log_path, args.verbose, dist.is_main)
    try:
        with experiment.lock() if dist.is_main else contextlib.nullcontext():
            runner = make_runner(args, experiment, device, dist, args.num_workers)
            if args.tier is not None:
                runner.select_tier(args.tier)
            trainer = Trainer(experiment, runner, dist, args.max_epochs, args.log_period)
            if args.epoch is not None:
                restart_from_epoch(experiment, trainer, args.epoch)
            else:
                trainer.resume()
            if trainer.epoch > trainer.max_epochs:
                if dist.is_main:
                    print(f"nothing to train: epoch {trainer.epoch - 1} is done and max epochs is "
                          f"{trainer.max_epochs} (the last epoch to train, counted from the "
                          f"experiment's first); pass a larger --max-epochs to train on")
                return 0
            log.info("train %s on %s (world size %d): epoch %d to %d", experiment.name, device,
                     dist.world_size, trainer.epoch, trainer.max_epochs)

            def render(epoch, writer):   # on every rank: each renders its share, rank 0 writes
                out_dir = experiment.epoch_results_dir(epoch)
                metrics = runner.test(epoch, out_dir, writer, dist=dist)
                if metrics is not None:
                    log.info("%s", metrics_summary("test", metrics, out_dir), extra={"summary": True})
                    update_report(args, experiment, log)

            trainer.run(test_callback=render)
            if trainer.interrupted_by:
                # The conventional 128 + signal number, so that `train && test` and job
                # schedulers tell an interrupted run from a finished one.
                return 128 + signal.Signals[trainer.interrupted_by].value
            if dist.is_main and trainer.epoch > trainer.max_epochs:
                print(f"training done: {experiment.checkpoints_dir}")
    finally:
        distributed.teardown()


def metrics_summary(what: str, metrics: dict, out_dir: Path) -> str:
    """One readable line: the mean of each figure of metrics.json, and where the files are."""
    means = " ".join(f"{key} {value:.4g}" for key, value in metrics["mean"].items()
                     if isinstance(value, (int, float)))
    rendered = metrics.get("utterances")       # PASE's test renders speakers, not utterances
    count = "" if rendered is None else f" ({len(rendered)} utterance{'s' * (len(rendered) != 1)})"
    return f"{what} epoch {metrics.get('epoch')}{count}: {means}; results: {out_dir}"


def restart_from_epoch(experiment, trainer, epoch: int) -> None:
    """`train --epoch N`: continue from that epoch checkpoint, dropping later progress."""
    experiment.resolve_epoch(epoch)
    for later in experiment.checkpoint_epochs():
        if later > epoch:
            experiment.checkpoint_path(later).unlink()
    experiment.partial_checkpoint_path.unlink(missing_ok=True)
    trainer.resume()


def cmd_test(args, experiment) -> None:
    setup_logging(experiment.log_path, args.verbose)
    epoch = experiment.resolve_epoch(args.epoch)
    from .training.distributed import parse_device
    runner = trained_runner(args, experiment, epoch, parse_device(args.device))
    out_dir = experiment.epoch_results_dir(epoch)
    if args.speakers != "modeling":
        out_dir = out_dir / args.speakers
    runner.render_seed = args.seed
    if args.seed is not None:
        out_dir = out_dir / f"seed-{args.seed}"
    from tensorboardX import SummaryWriter
    log = logging.getLogger(LOGGER_NAME)
    log.info("test %s epoch %d (%s speakers, rendering seed %d) on %s", experiment.name, epoch,
             args.speakers, runner.rendering_seed, args.device)
    if args.seed is None:
        with SummaryWriter(str(experiment.tensorboard_dir)) as writer:
            metrics = runner.test(epoch, out_dir, writer, speaker_set=args.speakers)
    else:
        metrics = runner.test(epoch, out_dir, None, speaker_set=args.speakers)
    summary = metrics_summary("test", metrics, out_dir)
    log.info("%s", summary)
    print(summary)
    print(f"report: {update_report(args, experiment)}")


def cmd_test_sample(args, experiment) -> None:
    setup_logging(experiment.log_path, args.verbose)
    index = experiment.data_index()
    ids = {u["id"] for u in index["utterances"]}
    if args.sample not in ids:
        raise UserError(f"--sample {args.sample}: no such utterance in {experiment.data_index_path}")
    epoch = experiment.resolve_epoch(args.epoch)
    from .training.distributed import parse_device
    runner = trained_runner(args, experiment, epoch, parse_device(args.device))
    out_dir = experiment.epoch_results_dir(epoch) / "samples"
    log = logging.getLogger(LOGGER_NAME)
    log.info("test_sample %s epoch %d: %s on %s", experiment.name, epoch, args.sample, args.device)
    metrics = runner.test(epoch, out_dir, None, utterance_ids=[args.sample])
    summary = metrics_summary(f"test_sample {args.sample}", metrics, out_dir)
    log.info("%s", summary)
    print(summary)
    print(f"report: {update_report(args, experiment)}")


def cmd_create_release(args, experiment) -> None:
    from .experiment.folder import atomic_torch_save
    from .experiment.release import build_release
    from .runners.rendering import choose_test_utterances
    epoch = experiment.resolve_epoch(args.epoch)
    config = experiment.config()
    utterances = choose_test_utterances(experiment.data_index(), config["test"]["utterances"])
    release = build_release(experiment, epoch, args.data_path, utterances)
    atomic_torch_save(experiment.release_path(epoch), release)
    print(f"release: {experiment.release_path(epoch)} (test utterances: {' '.join(utterances)})")


def cmd_synthesize(args, experiment) -> None:
    import tempfile
    from .experiment.release import load_release, unpack_release
    from .runners.rendering import file_stem
    from .runners.synthesis import NEW_INPUTS, check_utterance, new_input_record, new_inputs
    from .training.distributed import parse_device
    setup_logging(None if args.release else experiment.log_path, args.verbose)
    device = parse_device(args.device)
    with tempfile.TemporaryDirectory(prefix="samplernn_pase-synthesize-") as unpacked:
        if args.release is not None:
            release = load_release(args.release)
            experiment, epoch = unpack_release(release, Path(unpacked)), release["epoch"]
            out_dir = args.output_dir or Path("synthesized")
        else:
            epoch = experiment.resolve_epoch(args.epoch)
            out_dir = args.output_dir or experiment.epoch_results_dir(epoch) / "synthesized"
        records = []
        if args.utterance is not None:
            if args.speaker is not None:
                raise UserError("--speaker: only with --features, --text or --espeak-text (an utterance "
                                "has its speaker)")
            check_utterance(experiment, args.utterance, args.release or experiment.data_index_path)
            utterance = args.utterance
        else:
            kind = next(name for name in NEW_INPUTS if getattr(args, name) is not None)
            records = [new_input_record(experiment, kind, getattr(args, kind), args.speaker,
                                        Path(unpacked) / "input")]
            utterance = records[0]["id"]
        runner = trained_runner(args, experiment, epoch, device, from_release=args.release is not None)
        runner.render_seed = args.seed
        log = logging.getLogger(LOGGER_NAME)
        log.info("synthesize %s from %s epoch %d", utterance, args.release or experiment.name, epoch)
        with new_inputs(runner, records):
            metrics = runner.test(epoch, out_dir, None, utterance_ids=[utterance])
    summary = metrics_summary(f"synthesize {utterance}", metrics, out_dir)
    log.info("%s", summary)
    print(summary)
    print(f"wav: {out_dir / file_stem(utterance)}.wav")


def cmd_tensorboard(args, experiment) -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError("tensorboard: the `tensorboard` package is not installed "
                        "(pip install tensorboard)") from None
    if args.compare:
        runs = ([p for p in sorted(args.experiments_path.iterdir()) if (p / "tensorboard").is_dir()]
                if args.experiments_path.is_dir() else [])
        if not runs:
            raise UserError(f"--experiments-path {args.experiments_path}: no experiment with "
                            "TensorBoard logs to compare")
        logdir = ["--logdir_spec", ",".join(f"{p.name}:{p / 'tensorboard'}" for p in runs)]
    else:
        logdir = ["--logdir", str(experiment.tensorboard_dir)]
    command = [sys.executable, "-m", "tensorboard.main", *logdir, "--host", args.host,
               "--port", str(args.port)]
    print(f"serving on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    # Become the server, so that signals (Ctrl-C, kill) reach it and nothing is left running.
    os.execv(sys.executable, command)


def update_report(args, experiment, log=None) -> Path | None:
    """report.html after a test. During training a failing report is logged, not fatal:
    an epoch of training is worth more than a page."""
    from .report import write_report
    if log is None:
        return write_report(experiment, args.data_path)
    try:
        return write_report(experiment, args.data_path)
    except Exception:
        log.exception("report: could not write %s/report.html", experiment.root)
        return None


def cmd_report(args, experiment) -> None:
    from .report import write_comparison, write_report
    if args.compare is None:
        print(f"report: {write_report(experiment, args.data_path)}")
        return
    output = args.output or args.experiments_path / "compare.html"
    print(f"report: {write_comparison(args.experiments_path, args.compare, output, args.data_path)}")


COMMANDS = {
    "init": cmd_init, "info": cmd_info, "train": cmd_train, "test": cmd_test,
    "test_sample": cmd_test_sample, "create_release": cmd_create_release,
    "tensorboard": cmd_tensorboard, "report": cmd_report, "synthesize": cmd_synthesize,
}


def needs_experiment_name(args) -> bool:
    return not ((args.command == "tensorboard" and args.compare)
                or (args.command == "report" and args.compare is not None)
                or (args.command == "synthesize" and args.release is not None))


def reproducible_mkl(command: str) -> None:
    """Strict MKL for `train` (torchrun's workers run it too): MKL otherwise picks
    summation orders by memory alignment, so two runs of the same seeded training
    differ in the last bits, and a resumed run would not repeat the uninterrupted
    one exactly. Only there: strict mode halves single-stream SampleRNN generation.
    MKL reads the variable when torch loads it, so this runs before any torch import."""
    if command == "train":
        os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    reproducible_mkl(args.command)
    if args.experiment_name is None and needs_experiment_name(args):
        parser.error("the following arguments are required: --experiment-name")
    from .experiment.folder import Experiment
    try:
        experiment = None
        if needs_experiment_name(args):
            experiment = Experiment(args.experiments_path, args.experiment_name)
            if args.command != "init":
                experiment.require()
        status = COMMANDS[args.command](args, experiment)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return status or 0

"""What `init` does with data: corpora -> features -> speakers and splits -> index + normalization.

`prepare_data` reads every configured corpus (building the demo corpus on
first use), extracts features through the cache in a process pool, leaves out
bad files (logged by name, counted by reason in the report), allocates
speakers and utterance splits, builds the label vocabularies and computes the
per-speaker normalization. The CLI writes the two results into the
experiment as data.json and normalization.npz (formats in docs/ARCHITECTURE.md).
"""

import contextlib
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import UserError
from . import allocation, cache, features, hts_labels
from .corpora import BUILT_CORPORA, read_corpus
from .normalization import Accumulator


def _relative(path: Path, data_path: Path) -> str:
    try:
        return Path(os.path.relpath(path, data_path)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


@contextlib.contextmanager
def single_threaded_children():
    """Processes started inside use one math thread each: the pool is the parallelism,
    and N workers x N threads would oversubscribe the cores."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: "1" for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def extract_all(tasks: list[dict], num_workers: int, log: logging.Logger) -> list[dict]:
    """cache.cached_extract over every task, in a process pool when num_workers > 1."""
    progress = dict(total=len(tasks), desc="features", unit="file", disable=not sys.stderr.isatty(),
                    dynamic_ncols=True)
    if num_workers <= 1 or len(tasks) <= 1:
        return [cache.cached_extract(task) for task in tqdm(tasks, **progress)]
    # spawn: workers must not inherit the parent's threads (torch, OpenMP) through fork.
    context = multiprocessing.get_context("spawn")
    with single_threaded_children(), \
            ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
        chunksize = max(1, min(16, len(tasks) // (4 * num_workers)))
        return list(tqdm(pool.map(cache.cached_extract, tasks, chunksize=chunksize), **progress))


def require_data_path(data_config: dict, data_path: Path, log: logging.Logger | None = None) -> None:
    """The data folder must exist, unless every corpus is one the package builds there (the demo)."""
    data_path = Path(data_path)
    if data_path.is_dir():
        return
    if all(entry["type"] in BUILT_CORPORA for entry in data_config["corpora"]):
        data_path.mkdir(parents=True)
        if log is not None:
            log.info("created the data folder %s for the corpus built there", data_path)
        return
    raise UserError(f"{data_path}: data folder not found (--data-path)")


def prepare_data(data_config: dict, data_path: Path, seed: int, num_workers: int,
                 log: logging.Logger) -> tuple[dict, dict[str, np.ndarray]]:
    """Returns (data_index for data.json, normalization arrays for normalization.npz).

    Raises UserError (one line naming the file or field) for a missing data
    folder, an unknown corpus type, too few speakers of a gender, or no valid utterance.
    """
    data_path = Path(data_path)
    require_data_path(data_config, data_path, log)
    params = features.feature_params(data_config)
    sample_rate = params["sample_rate"]
    genders, sources, corpus_of, missing = read_corpora(data_config, data_path, log)
    tasks = [{"audio": str(u.audio), "labels": str(u.labels) if u.labels else None,
              "data_path": str(data_path), "params": params} for u in sources]
    results = extract_all(tasks, num_workers, log)
    kept, dropped, converted = keep_extracted(sources, results, missing, data_path, log)

    speaker_seconds: dict[str, float] = {}
    for source, result in kept.values():
        speaker_seconds[source.speaker] = speaker_seconds.get(source.speaker, 0.0) + result["num_samples"] / sample_rate
    speaker_set = allocation.allocate_speakers(speaker_seconds, genders, data_config, seed)
    speaker_ids = sorted((s for s in speaker_set if speaker_set[s] == "modeling")) + \
        sorted((s for s in speaker_set if speaker_set[s] == "adaptation"))
    split_of = {}
    for speaker in speaker_ids:
        own = [(uid, r["num_samples"] / sample_rate) for uid, (s, r) in kept.items() if s.speaker == speaker]
        split_of.update(allocation.split_utterances(
            own, data_config["test_seconds_per_speaker"], data_config["validation_seconds_per_speaker"],
            seed, speaker, data_config["train_seconds_per_speaker"]))
    used = {uid: kept[uid] for uid in sorted(split_of)}
    linguistic = linguistic_index([r for _, r in used.values() if r["has_labels"]])
    normalization = speaker_normalization(used, split_of, speaker_ids, params, linguistic is not None)

    utterances = [{
        "id": uid, "speaker": source.speaker, "seconds": round(result["num_samples"] / sample_rate, 4),
        "num_frames": int(result["num_frames"]), "split": split_of[uid],
        "audio": _relative(source.audio, data_path), "features": result["features"],
        "has_labels": bool(result["has_labels"]),
        "text": source.text, "word_ends": word_ends(source) if result["has_labels"] else None,
    } for uid, (source, result) in used.items()]
    speakers = [{"id": s, "corpus": corpus_of[s], "gender": genders.get(s), "seconds": round(speaker_seconds[s], 3),
                 "set": speaker_set[s], "index": number} for number, s in enumerate(speaker_ids)]
    unused = sorted(s for s in speaker_seconds if s not in speaker_set)
    index = {
        "sample_rate": sample_rate,
        "hop_length": params["hop_length"],
        "feature_params": params,
        "speakers": speakers,
        "utterances": utterances,
        "linguistic": linguistic,
        "acoustic_fields": features.acoustic_fields(params["mcep_order"]),
        "report": {"kept": len(kept), "dropped": {k: sorted(v) for k, v in sorted(dropped.items())},
                   "converted": converted, "unused_speakers": unused},
    }
    _log_summary(index, log)
    return index, normalization


def read_corpora(data_config: dict, data_path: Path, log: logging.Logger):
    """Every corpus of data.corpora: (gender of each speaker, the utterances, the corpus of
    each speaker, the audio files listed but missing); a speaker or an utterance id in two
    corpora is refused."""
    genders, sources, corpus_of, missing = {}, [], {}, []
    for entry in data_config["corpora"]:
        corpus = read_corpus(entry, data_path, data_config, log)
        for speaker in corpus.speakers:
            if speaker in genders:
                raise UserError(f"data.corpora: speaker id {speaker!r} appears in two corpora; give them "
                                f"different `name`s")
            corpus_of[speaker] = corpus.name
        genders.update(corpus.speakers)
        sources += corpus.utterances
        missing += corpus.missing
        log.info("corpus %s (%s): %d speakers, %d audio files", corpus.name, entry["path"],
                 len(corpus.speakers), len(corpus.utterances))
    if len({u.id for u in sources}) != len(sources):
        raise UserError("data.corpora: two utterances share an id; give the corpora different `name`s")
    return genders, sources, corpus_of, missing


def keep_extracted(sources, results, missing, data_path: Path, log: logging.Logger):
    """The utterances whose features were extracted: ({id: (source, result)}, {reason: the files
    left out}, how many were resampled / downmixed); none kept is refused."""
    dropped: dict[str, list[str]] = {}
    for path in missing:
        dropped.setdefault("missing_audio", []).append(_relative(Path(path), data_path))
        log.warning("left out %s: missing_audio (listed by the corpus but not found)", path)
    kept = {}
    converted = {"resampled": 0, "downmixed": 0}
    for source, result in zip(sources, results):
        if result.get("recomputed"):
            log.warning("feature cache entry of %s could not be read, recomputed: %s", source.audio,
                        result["recomputed"])
        if result["status"] != "kept":
            dropped.setdefault(result["reason"], []).append(_relative(source.audio, data_path))
            log.warning("left out %s: %s (%s)", source.audio, result["reason"], result.get("message", ""))
            continue
        kept[source.id] = (source, result)
        converted["resampled"] += int(result.get("resampled", 0))
        converted["downmixed"] += int(result.get("downmixed", 0))
    if not kept:
        raise UserError(f"{data_path}: no valid utterance in data.corpora "
                        f"({sum(len(v) for v in dropped.values())} files left out)")
    return kept, dropped, converted


def linguistic_index(labelled: list[dict]) -> dict | None:
    """data.json's `linguistic` from the extraction results of the labelled utterances (None:
    none has labels). Vocabularies, one per shared table: index 0 = x (not applicable), index
    1 = the unknown symbol (a symbol never seen here, met later), then every symbol seen."""
    if not labelled:
        return None
    return {"columns": list(hts_labels.COLUMNS),
            "categorical_fields": list(hts_labels.CATEGORICAL_FIELDS),
            "table_of_field": dict(hts_labels.CATEGORICAL_TABLES),
            "vocabularies": linguistic_vocabularies([r["phone_categorical"] for r in labelled]),
            "real_fields": list(hts_labels.FRAME_REAL_FIELDS)}


def speaker_normalization(used: dict, split_of: dict, speaker_ids: list[str], params: dict,
                          linguistic: bool) -> dict[str, np.ndarray]:
    """normalization.npz: per-speaker mean/std of the acoustic features (and of the real
    linguistic columns when the corpus has labels) over its training frames (all of its
    frames for a speaker without any)."""
    acoustic_fields = features.acoustic_fields(params["mcep_order"])
    flag_dims = tuple(acoustic_fields.index(f) for f in features.FLAG_FIELDS)
    acoustic_stats = {s: Accumulator(len(acoustic_fields)) for s in speaker_ids}
    linguistic_stats = {s: Accumulator(len(hts_labels.FRAME_REAL_FIELDS)) for s in speaker_ids}
    for speaker in speaker_ids:
        own = [uid for uid, (s, _) in used.items() if s.speaker == speaker]
        training = [uid for uid in own if split_of[uid] == "train"] or own
        for uid in training:
            result = used[uid][1]
            acoustic_stats[speaker].add(result["acoustic_sum"], result["acoustic_sumsq"], result["num_frames"])
            if result["has_labels"]:
                linguistic_stats[speaker].add(result["linguistic_sum"], result["linguistic_sumsq"],
                                              result["num_frames"])
    normalization = {"speakers": np.array(speaker_ids, dtype=str)}
    means, stds = zip(*(acoustic_stats[s].mean_std(flag_dims) for s in speaker_ids))
    normalization["acoustic_mean"], normalization["acoustic_std"] = np.stack(means), np.stack(stds)
    if linguistic:
        unnormalized = tuple(hts_labels.FRAME_REAL_FIELDS.index(f) for f in hts_labels.UNNORMALIZED_FIELDS)
        means, stds = zip(*(linguistic_stats[s].mean_std(unnormalized) for s in speaker_ids))
        normalization["linguistic_real_mean"], normalization["linguistic_real_std"] = np.stack(means), np.stack(stds)
    return normalization


def word_ends(source) -> list[float] | None:
    """When each word of a transcribed utterance ends (seconds, from its labels; the
    intelligibility judge takes the words said inside a cut rendering from them)."""
    if source.text is None or source.labels is None:
        return None
    return [round(float(t), 4) for t in hts_labels.word_end_times(hts_labels.read_labels(source.labels))]


def linguistic_vocabularies(phone_categoricals: list[np.ndarray]) -> dict[str, list[str]]:
    """{table: [x, <unknown>, symbols seen in the fields of that table, sorted]}."""
    seen = {table: set() for table in hts_labels.TABLES}
    for symbols in phone_categoricals:
        for column, field in enumerate(hts_labels.CATEGORICAL_FIELDS):
            seen[hts_labels.CATEGORICAL_TABLES[field]].update(symbols[:, column].tolist())
    reserved = [hts_labels.NOT_APPLICABLE, hts_labels.UNKNOWN_SYMBOL]
    return {table: reserved + sorted(seen[table] - set(reserved)) for table in hts_labels.TABLES}


def _log_summary(index: dict, log: logging.Logger) -> None:
    report = index["report"]
    dropped = ", ".join(f"{len(files)} {reason}" for reason, files in report["dropped"].items()) or "none"
    log.info("data: kept %d files, dropped %s; resampled %d, downmixed %d", report["kept"], dropped,
             report["converted"]["resampled"], report["converted"]["downmixed"])
    for set_name in ("modeling", "adaptation"):
        speakers = [s for s in index["speakers"] if s["set"] == set_name]
        if speakers:
            genders = ", ".join(f"{sum(1 for s in speakers if s['gender'] == g)} {g}" for g in ("f", "m"))
            log.info("%s speakers: %d (%s)", set_name, len(speakers), genders)
    for split in ("train", "validation", "test"):
        chosen = [u for u in index["utterances"] if u["split"] == split]
        log.info("%s: %d utterances, %.1f minutes", split, len(chosen), sum(u["seconds"] for u in chosen) / 60)

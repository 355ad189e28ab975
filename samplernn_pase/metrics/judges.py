"""The judges of a `test`, written down once: which figure of metrics.json answers which
question, where the model's value and its reference rows' values are, and which way is better.

The report's answers table and its plots (report/collect.py) and TensorBoard (one chart per
judge, runners/rendering.py `log_judges`) both read this table, so a figure is grouped with its
reference rows in one place. What is not a judge (analysis settings, sample counts, seconds,
per-utterance figures) stays in metrics.json and in the report's tables, and is not plotted.

A judge's `references` maps a line's label to its dotted path in metrics.json; the label
`{row}` stands for every reference row of `metrics["references"]` (real, world, griffin_lim,
...), whose path holds `{row}` too. `not_rows`: rows the figure says nothing about (the real
recording's MCD against itself is 0 by definition).
"""

import math
from dataclasses import dataclass, field

HIGHER, LOWER = "higher", "lower"
ROW = "{row}"
#: How reference rows are ordered: the ceiling first, then the classical baselines, then others.
ROW_ORDER = ("real", "world", "griffin_lim", "vocoder")
NOT_REAL = ("real",)     # compared with the real recording: the real row is 0 by definition


@dataclass(frozen=True)
class Judge:
    key: str                      # TensorBoard tag `<test tag>/<key>`, the plot's file name
    name: str                     # as the report shows it
    better: str | None            # HIGHER, LOWER, or None: read against another judge
    model: str                    # dotted path of the model's figure
    references: dict = field(default_factory=dict)   # line label -> dotted path
    not_rows: tuple = ()          # reference rows left out
    note: str = ""                # what the reference lines are, where it is not plain


def per_row(key: str, name: str, better: str | None, not_rows: tuple = (), note: str = "") -> Judge:
    """A figure the evaluation gives the model and every reference row alike (its mean)."""
    if not_rows == NOT_REAL and not note:
        note = "real: 0 by definition (the recording against itself), not shown"
    return Judge(key, name, better, f"mean.{key}", {ROW: f"references.{ROW}.mean.{key}"}, not_rows, note)


def frechet(embedder: str, name: str) -> Judge:
    return Judge(f"frechet_{embedder}", f"Fréchet distance, {name}", LOWER, f"frechet.{embedder}.distance",
                 {"real": f"frechet.{embedder}.floor"},
                 note="real: the floor, one half of the real test set against the other")


def model_only(key: str, name: str, better: str | None, references: dict | None = None,
               note: str = "") -> Judge:
    """A family's own figure of the model (its mean), with the lines it is read against."""
    return Judge(key, name, better, f"mean.{key}", {label: f"mean.{path}" for label, path in
                                                    (references or {}).items()}, note=note)


BASELINE = "per-phone baseline"

JUDGES: tuple[Judge, ...] = (
    # The independent judges of every family that renders audio (metrics/evaluation.py).
    per_row("dnsmos_ovrl", "DNSMOS overall (P.835 OVRL)", HIGHER),
    per_row("dnsmos_sig", "DNSMOS speech (P.835 SIG)", HIGHER),
    per_row("dnsmos_bak", "DNSMOS background (P.835 BAK)", HIGHER),
    per_row("dnsmos_p808", "DNSMOS P.808 MOS", HIGHER),
    per_row("wer", "Whisper word error rate", LOWER),
    per_row("cer", "Whisper character error rate", LOWER),
    per_row("speaker_similarity_own", "speaker similarity to its own speaker", HIGHER),
    per_row("speaker_similarity_other", "speaker similarity to the other speakers", None,
            note="read against the similarity to its own speaker"),
    per_row("speaker_identified", "speaker identification accuracy", HIGHER),
    per_row("mcd_db", "mel-cepstral distortion (dB)", LOWER, NOT_REAL),
    per_row("f0_rmse_hz", "F0 RMSE (Hz)", LOWER, NOT_REAL),
    per_row("vuv_error", "voicing (V/UV) error", LOWER, NOT_REAL),
    per_row("mrstft_distance", "multi-resolution STFT distance", LOWER, NOT_REAL),
    frechet("resemblyzer", "Resemblyzer embeddings"),
    frechet("pase", "PASE embeddings"),
    frechet("log_mel", "log-mel frames"),
    frechet("scaled_log_mel", "the model's scaled log-mel frames"),
    # Families' own figures.
    model_only("nll_bits", "NLL of the real audio (bits per sample)", LOWER),
    model_only("speaker_similarity", "PASE similarity to the speaker's seed", HIGHER),
    model_only("nll", "NLL of the real mel spectrogram (sum over tiers)", LOWER),
    model_only("upsampling_l1", "upsampling L1 to the real mel", LOWER),
    model_only("codebook_perplexity", "codebook perplexity", HIGHER, {"every code alike": "codebook_size"}),
    model_only("test_nll_bits_per_code", "NLL of the test codes (bits per code)", LOWER,
               {"uniform": "uniform_bits_per_code"}),
    Judge("wasserstein_test", "critic's Wasserstein estimate on test crops", LOWER, "wasserstein_test"),
    model_only("profile_l1_own", "mel profile L1 to its own label's", LOWER,
               {"other labels": "profile_l1_others"}),
    model_only("oracle_mcd_db", "predicted features' MCD, label durations (dB)", LOWER,
               {BASELINE: "baseline_mcd_db"}),
    model_only("oracle_f0_rmse_hz", "predicted features' F0 RMSE, label durations (Hz)", LOWER,
               {BASELINE: "baseline_f0_rmse_hz"}),
    model_only("oracle_vuv_error", "predicted features' V/UV error, label durations", LOWER,
               {BASELINE: "baseline_vuv_error"}),
    model_only("duration_rmse_frames_all_phones", "duration RMSE (frames, every test phone)", LOWER,
               {BASELINE: "baseline_duration_rmse_frames_all_phones"}),
    model_only("duration_pearson", "duration correlation (every test phone)", HIGHER,
               {BASELINE: "baseline_duration_pearson"}),
    # PASE (runners/pase.py).
    model_only("speaker_identification_accuracy", "speaker identification from test seeds", HIGHER),
    Judge("utterance_identification_accuracy", "speaker identification of single utterances", HIGHER,
          "mean.utterance_identification_accuracy", {"chance": "utterance_identification.chance"}),
    model_only("same_speaker_similarity", "cosine of a speaker's test and train seeds", HIGHER,
               {"other speakers": "other_speaker_similarity"}),
    model_only("validation_pase_loss", "PASE workers' validation loss", LOWER),
)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def value_at(tree, path: str):
    """The number at a dotted path of nested dicts ("frechet.log_mel.floor"); None when the
    path is missing or holds no finite number."""
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return float(tree) if is_number(tree) else None


def reference_rows(metrics: dict) -> list[str]:
    """The reference rows of a metrics.json, the real recording first."""
    rows = list(metrics.get("references") or {}) if isinstance(metrics, dict) else []
    return sorted(rows, key=lambda row: (ROW_ORDER.index(row) if row in ROW_ORDER else len(ROW_ORDER), row))


def judge_lines(judge: Judge, metrics: dict) -> dict[str, str]:
    """line label -> dotted path, "model" first, `{row}` expanded over the file's reference rows."""
    lines = {"model": judge.model}
    for label, path in judge.references.items():
        if label == ROW:
            lines.update({row: path.replace(ROW, row) for row in reference_rows(metrics)
                          if row not in judge.not_rows})
        else:
            lines[label] = path
    return lines


def judge_values(judge: Judge, metrics: dict) -> dict[str, float | None]:
    """line label -> its number in `metrics` (None where it has none), "model" first."""
    return {label: value_at(metrics, path) for label, path in judge_lines(judge, metrics).items()}


def judged(metrics: dict) -> list[tuple[Judge, dict[str, float | None]]]:
    """The judges the file has a model figure for, with the values of their lines."""
    found = [(judge, judge_values(judge, metrics)) for judge in JUDGES]
    return [(judge, values) for judge, values in found if values["model"] is not None]

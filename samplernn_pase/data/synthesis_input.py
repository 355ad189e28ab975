"""What `synthesize` renders besides the corpus's utterances: a features file, or new text.

A features file has the layout of a feature-cache entry, the `.npz` that `init`
writes for every utterance (cache.py; data.json's `features` of an utterance
names it, relative to --data-path):

    acoustic            (T, A) float   WORLD features, un-normalized (A: data.json acoustic_fields)
    audio               (T * hop,)     optional: the recording they describe, the reference
                                       the render is compared with (written beside it as
                                       .real.wav); without it, the WORLD vocoder's rendering
                                       of `acoustic` is the reference (.world.wav)
    and for a model conditioned on linguistic labels:
    phone_index         (T,) int       the phone of each frame
    position_in_phone   (T,) float     the frame's position in its phone, 0..1
    phone_duration      (P,) float     seconds
    phone_categorical   (P, 10) str    the label's symbol fields (hts_labels.CATEGORICAL_FIELDS)
    phone_real          (P, 43) float  its numeric fields (hts_labels.LABEL_REAL_FIELDS)

The speaker's normalization is applied on loading, as for a corpus utterance.

New text goes through the front end the demo corpus is made with: eSpeak NG
reads it in the speaker's demo voice, its phoneme events give the labels and
phone durations, and the features of that reading (log-F0 included) are
extracted as `init` extracts a corpus utterance.
"""

import re
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import demo_corpus, features, hts_labels

LINGUISTIC_ARRAYS = ("phone_index", "position_in_phone", "phone_duration", "phone_categorical", "phone_real")


def require_speaker(speaker: str, index: dict) -> dict:
    """data.json's record of a speaker given by name."""
    speakers = {s["id"]: s for s in index["speakers"]}
    if speaker not in speakers:
        raise UserError(f"--speaker {speaker}: not a speaker of this model (known: {' '.join(speakers)})")
    return speakers[speaker]


def utterance_record(utterance_id: str, speaker: str, path: Path, arrays: dict, index: dict) -> dict:
    """The data.json record of a features file outside the corpus, which the store reads like
    a cache entry. Its split is none of the corpus's: the evaluation's references (speaker
    centroids, the real set of the Fréchet distances) stay the corpus's recordings."""
    num_frames = len(arrays["acoustic"])
    seconds = num_frames * index["hop_length"] / index["sample_rate"]
    return {"id": utterance_id, "speaker": speaker, "split": "synthesized", "seconds": round(seconds, 4),
            "num_frames": num_frames, "features": str(Path(path).resolve()),
            "has_labels": "phone_categorical" in arrays}


def features_file_record(path: Path, speaker: str, index: dict, conditioning: str) -> dict:
    """`--features FILE --speaker NAME`: the file checked against what the model takes."""
    require_speaker(speaker, index)
    if not Path(path).is_file():
        raise UserError(f"--features {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as error:
        raise UserError(f"--features {path}: not an .npz of features ({type(error).__name__}); give one "
                        "as `init` writes for an utterance (see `synthesize --help`)") from None
    needed = ("acoustic",) + (LINGUISTIC_ARRAYS if conditioning != "acoustic" else ())
    missing = [name for name in needed if name not in arrays]
    if missing:
        raise UserError(f"--features {path}: no {', '.join(missing)} array (a model with "
                        f"{conditioning!r} conditioning takes {', '.join(needed)})")
    check_shapes(path, arrays, index, needed + (("audio",) if "audio" in arrays else ()))
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem)
    return utterance_record(f"{speaker}_{stem}", speaker, path, arrays, index)


def check_shapes(path: Path, arrays: dict, index: dict, names: tuple[str, ...]) -> None:
    """One line naming the first array whose shape, type or values the model cannot take."""
    acoustic_dim = len(index["acoustic_fields"])
    acoustic = arrays["acoustic"]
    if acoustic.ndim != 2 or acoustic.shape[1] != acoustic_dim or len(acoustic) < 1:
        raise UserError(f"--features {path}: acoustic has shape {acoustic.shape}, expected (frames, "
                        f"{acoustic_dim}) (the columns of data.json acoustic_fields)")
    frames = len(acoustic)
    phones = len(arrays["phone_categorical"]) if "phone_categorical" in arrays else 0
    expected = {
        "audio": ((frames * index["hop_length"],), "frames x hop_length samples", "f"),
        "acoustic": ((frames, acoustic_dim), "", "f"),
        "phone_index": ((frames,), "one phone per frame", "iu"),
        "position_in_phone": ((frames,), "one per frame", "f"),
        "phone_duration": ((phones,), "one per phone", "f"),
        "phone_categorical": ((phones, len(hts_labels.CATEGORICAL_FIELDS)), "the label's symbol fields", "U"),
        "phone_real": ((phones, len(hts_labels.LABEL_REAL_FIELDS)), "the label's numeric fields", "f"),
    }
    for name in names:
        shape, meaning, kinds = expected[name]
        array = arrays[name]
        if array.shape != shape or array.dtype.kind not in kinds:
            raise UserError(f"--features {path}: {name} is {array.dtype} {array.shape}, expected "
                            f"{'strings' if kinds == 'U' else 'numbers'} {shape} ({meaning}; "
                            f"{frames} frames from acoustic)")
        if kinds == "f" and not np.all(np.isfinite(array)):
            raise UserError(f"--features {path}: {name} holds NaN or Inf")
    if "phone_index" in names and (arrays["phone_index"].min() < 0 or arrays["phone_index"].max() >= phones):
        raise UserError(f"--features {path}: phone_index points outside the {phones} phones")


def text_record(text: str, speaker: str, index: dict, data_config: dict, folder: Path,
                option: str = "--text") -> dict:
    """`--text "..." --speaker NAME` (or `--espeak-text`): eSpeak NG reads the text in the
    speaker's demo voice; the features of that reading are saved in `folder` as `init` would
    cache them. An acoustic experiment takes only its labels; SampleRNN re-vocodes it all."""
    record = require_speaker(speaker, index)
    corpus_types = {entry.get("name") or entry["type"]: entry["type"] for entry in data_config["corpora"]}
    if corpus_types.get(record["corpus"]) != "demo":
        raise UserError(f"--speaker {speaker}: from corpus {record['corpus']!r}, not the eSpeak NG demo "
                        f"corpus; {option} reads text with eSpeak NG, so only its speakers (whose labels "
                        "and voices the model learned from it) can say new text")
    if not text.strip():
        raise UserError(f"{option}: empty text")
    voice = speaker[len(record["corpus"]) + 1:]       # corpora.py: <corpus name>_<raw speaker id>
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wav = demo_corpus.read_text(text, voice, index["sample_rate"], folder / "text")
    try:
        arrays = features.extract_utterance(wav, wav.with_suffix(".lab"), index["feature_params"])
    except features.BadInput as error:
        raise UserError(f"{option}: eSpeak NG's reading of it cannot be used ({error})") from None
    path = folder / "text.npz"
    np.savez(path, **arrays)
    words = re.findall(r"[a-z0-9]+", text.lower())[:6]
    record = utterance_record(f"{speaker}_text_{'_'.join(words) or 'text'}", speaker, path, arrays, index)
    return {**record, "text": " ".join(text.split())}      # the words to judge the rendering against

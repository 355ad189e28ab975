"""Speaker sets (modeling / adaptation) and utterance splits (train / validation / test).

Speakers are ordered longest-recorded first (ties by id) or shuffled with the
experiment seed. Modeling speakers are taken first, per gender, from the head
of that order, or named (a list of speaker ids); adaptation speakers (unseen in
training, voiced from PASE embeddings) are taken from what remains. Counts are
per gender (`{"f": 3, "m": 3}`); `null` modeling counts mean "every speaker not
used for adaptation", which is what a single-speaker corpus such as LJSpeech
needs (with `adaptation_speakers` null or {}). Speakers left over are not used.

Each used speaker's utterances are shuffled with the seed and cut by seconds:
test first, then validation, the rest train (at least one utterance is
always left for training).
"""

import zlib

import numpy as np

from ..errors import UserError

GENDERS = ("f", "m")


def order_speakers(seconds: dict[str, float], order: str, seed: int) -> list[str]:
    speakers = sorted(seconds, key=lambda s: (-seconds[s], s))
    if order == "shuffled":
        rng = np.random.default_rng(seed)
        speakers = [speakers[i] for i in rng.permutation(len(speakers))]
    return speakers


def _take(ordered: list[str], genders: dict, counts: dict, set_name: str, field: str) -> list[str]:
    chosen = []
    for gender in GENDERS:
        wanted = counts.get(gender, 0)
        available = [s for s in ordered if genders.get(s) == gender]
        if len(available) < wanted:
            have = {g: sum(1 for s in ordered if genders.get(s) == g) for g in GENDERS}
            unknown = sum(1 for s in ordered if genders.get(s) not in GENDERS)
            raise UserError(
                f"data.{field}: the {set_name} set needs {wanted} speakers of gender '{gender}' but only "
                f"{len(available)} are available (remaining speakers: {have['f']} f, {have['m']} m, "
                f"{unknown} of unknown gender)")
        chosen += available[:wanted]
    return [s for s in ordered if s in set(chosen)]


def allocate_speakers(seconds: dict[str, float], genders: dict[str, str | None], data_config: dict,
                      seed: int) -> dict[str, str]:
    """speaker id -> "modeling" | "adaptation", for the speakers that are used."""
    ordered = order_speakers(seconds, data_config["speaker_order"], seed)
    modeling_counts = data_config["modeling_speakers"]
    adaptation_counts = data_config["adaptation_speakers"] or {}
    if modeling_counts is not None:
        if isinstance(modeling_counts, list):      # named
            unknown = [s for s in modeling_counts if s not in seconds]
            if unknown:
                raise UserError(f"data.modeling_speakers: {', '.join(unknown)} not among the corpora's speakers "
                                f"({', '.join(sorted(seconds))})")
            modeling = [s for s in ordered if s in set(modeling_counts)]
        else:
            modeling = _take(ordered, genders, modeling_counts, "modeling", "modeling_speakers")
        remaining = [s for s in ordered if s not in modeling]
        adaptation = _take(remaining, genders, adaptation_counts, "adaptation", "adaptation_speakers")
    else:
        adaptation = _take(ordered, genders, adaptation_counts, "adaptation", "adaptation_speakers")
        modeling = [s for s in ordered if s not in adaptation]
        if not modeling:
            raise UserError("data.modeling_speakers: no speaker left for the modeling set")
    return {**{s: "modeling" for s in modeling}, **{s: "adaptation" for s in adaptation}}


def split_utterances(utterances: list[tuple[str, float]], test_seconds: float, validation_seconds: float,
                     seed: int, speaker: str, train_seconds: float | None = None) -> dict[str, str]:
    """utterance id -> split, for the (id, seconds) utterances of one speaker.

    With `train_seconds`, the training split stops once it has that many
    seconds (at least one utterance): the others are left out of the experiment.
    """
    ids = sorted(utterances)
    rng = np.random.default_rng([seed, zlib.crc32(speaker.encode())])
    ids = [ids[i] for i in rng.permutation(len(ids))]
    splits, index = {}, 0
    for split, budget in (("test", test_seconds), ("validation", validation_seconds)):
        taken = 0.0
        while taken < budget and index < len(ids) - 1:
            utterance_id, seconds = ids[index]
            splits[utterance_id] = split
            taken += seconds
            index += 1
    taken = 0.0
    for utterance_id, seconds in ids[index:]:
        if train_seconds is not None and taken > 0 and taken + seconds > train_seconds:
            break
        splits[utterance_id] = "train"
        taken += seconds
    return splits

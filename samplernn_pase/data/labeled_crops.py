"""The conditional WGAN-GP's data: random mel crops with the labels of their speaker.

The crops are those of the experiment's mels.npz (data/mel_crops.py); the
labels (speaker index, gender) come from data.json.
"""

import torch

from ..errors import UserError


class SpeakerLabels:
    """The label row of every speaker of data.json: [speaker index, gender index] (as asked)."""

    def __init__(self, index: dict, kinds: list[str]):
        speakers = index["speakers"]
        genders = [speaker.get("gender") for speaker in speakers]
        known = sorted({gender for gender in genders if gender})
        # Gender is a label only where the corpus knows it; an unknown one is its own class.
        self.kinds = [kind for kind in kinds if kind != "gender" or known]
        if not self.kinds:
            raise UserError("model.labels: no speaker of the corpus has a known gender; "
                            "add \"speaker\" to the labels")
        self.genders = known + (["unknown"] if None in genders or "" in genders else [])
        self.sizes = tuple(len(speakers) if kind == "speaker" else len(self.genders)
                           for kind in self.kinds)
        self.speaker_rows = {speaker["id"]: self.row(speaker) for speaker in speakers}
        self.speaker_of = {u["id"]: u["speaker"] for u in index["utterances"]}

    def row(self, speaker: dict) -> tuple[int, ...]:
        return tuple(speaker["index"] if kind == "speaker" else
                     self.genders.index(speaker.get("gender") or "unknown") for kind in self.kinds)

    def of_utterance(self, utterance_id: str) -> tuple[int, ...]:
        return self.speaker_rows[self.speaker_of[utterance_id]]

    def name(self, row: tuple[int, ...], speaker_ids: list[str]) -> str:
        """File-name-friendly name of a label row: the speaker id, else the gender."""
        if "speaker" in self.kinds:
            return speaker_ids[row[self.kinds.index("speaker")]]
        return f"gender-{self.genders[row[self.kinds.index('gender')]]}"


class LabeledCrops:
    """Batches {"mel": (B, 1, n_mels, frames), "labels": (B, L)} of a crop loader
    (data/mel_crops.py), whose position (`state_dict`) it passes through."""

    def __init__(self, loader, labels_of):
        self.loader, self.labels_of = loader, labels_of

    def __len__(self):
        return len(self.loader)

    @property
    def position(self) -> int:
        return self.loader.position

    def __iter__(self):
        for batch in self.loader:
            utterances = [item for item, _ in batch["chunks"]]
            yield {"mel": batch["chunk"].unsqueeze(1),
                   "labels": torch.tensor([self.labels_of(u) for u in utterances], dtype=torch.long)}

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)

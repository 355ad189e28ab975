"""A loader whose epoch is planned when it is made: a list of batch plans, walked by position.

The random-chunk, code-window and phone-sequence loaders draw an epoch's batches
(which items, which offsets) from (seed, epoch) up front; iterating builds each
planned batch in turn. Like the stateful loader's, the position is a plain dict,
so a mid-epoch checkpoint resumes at the next batch.
"""

from abc import ABC, abstractmethod


class PlannedBatches(ABC):
    """A subclass sets `self.batches` (one plan per batch) and `self.position = 0`, and
    defines `build(plan) -> batch`."""

    batches: list
    position: int

    def __len__(self) -> int:
        return len(self.batches)

    @abstractmethod
    def build(self, plan) -> dict:
        """The batch of one plan (an item of `self.batches`)."""

    def __iter__(self):
        while self.position < len(self.batches):
            plan = self.batches[self.position]
            self.position += 1
            yield self.build(plan)

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])

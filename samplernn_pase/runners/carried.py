"""The recurrent state a truncated-BPTT runner carries from one chunk to the next.

SampleRNN (a list of per-tier GRU states) and MelNet (per tier, a dict of
time-direction states) keep, for every loader slot, the detached state the last
chunk ended with; the next chunk starts from it (rows that start an utterance
are reset by the model). The state is part of the runner's checkpoint state, so
that a mid-epoch checkpoint resumes exactly; a new epoch and a step the NaN
guard skipped (the state may be poisoned) start again from the initial states.
"""

import torch


def _map_tensors(function, value):
    """`value` (tensors in dicts and lists) with `function` applied to every tensor."""
    if torch.is_tensor(value):
        return function(value)
    if isinstance(value, dict):
        return {key: _map_tensors(function, item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_map_tensors(function, item) for item in value]
    return value


class CarriedState:
    """`value`: the state the next chunk starts from (None: the initial states)."""

    def __init__(self):
        self.value = None

    def keep(self, state) -> None:
        """The state a chunk ended with, detached from its graph."""
        self.value = _map_tensors(torch.Tensor.detach, state)

    def clear(self) -> None:
        self.value = None

    def state_dict(self):
        return self.value

    def load(self, value, device: torch.device) -> None:
        """A `state_dict()` of a checkpoint (None: none), onto `device`."""
        self.value = None if value is None else _map_tensors(lambda tensor: tensor.to(device), value)

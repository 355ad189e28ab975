"""The one in-memory cache of loaded utterances: least recently used goes first.

The UtteranceStore keeps normalized features in one, MelNet's source keeps
standardized spectrograms in another: a loader slot reads its utterance chunk
after chunk, and should read it from disk (or compute it) once.
"""

from collections import OrderedDict


class LRUCache:
    """At most `size` values by key; a new value pushes out the one used longest ago."""

    def __init__(self, size: int):
        self.size = size
        self._values = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key, compute):
        """The value of `key`, made by `compute(key)` when it is not kept."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        value = compute(key)
        self._values[key] = value
        while len(self._values) > self.size:
            self._values.popitem(last=False)
        return value

    def discard(self, key) -> None:
        """Forget the value of `key`, if kept."""
        self._values.pop(key, None)

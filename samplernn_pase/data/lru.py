"""The one in-memory cache of loaded utterances: least recently used goes first.

The UtteranceStore keeps normalized features in one, MelNet's source keeps
standardized spectrograms in another: a loader slot reads its utterance chunk
after chunk, and should read it from disk (or compute it) once.
"""

from collections import OrderedDict


class LRUCache:
    """At most `size` values by key (None: no count limit) and, with `max_bytes`, at most that
    many bytes of them as `weigh(value)` counts; a new value pushes out the ones used longest
    ago (a value heavier than `max_bytes` alone is returned and not kept)."""

    def __init__(self, size: int | None, max_bytes: int | None = None, weigh=None):
        self.size, self.max_bytes, self.weigh = size, max_bytes, weigh
        self._values = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key, compute):
        """The value of `key`, made by `compute(key)` when it is not kept."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        value = compute(key)
        self._values[key] = value
        self._bytes += self._weight(value)
        while self._values and ((self.size is not None and len(self._values) > self.size)
                                or (self.max_bytes is not None and self._bytes > self.max_bytes)):
            self._bytes -= self._weight(self._values.popitem(last=False)[1])
        return value

    def discard(self, key) -> None:
        """Forget the value of `key`, if kept."""
        if key in self._values:
            self._bytes -= self._weight(self._values.pop(key))

    def _weight(self, value) -> int:
        return self.weigh(value) if self.max_bytes is not None else 0

"""data/lru.py against functools.lru_cache, an independent least-recently-used cache."""
import functools
import random

import pytest

from samplernn_pase.data.lru import LRUCache


@pytest.mark.parametrize("size", [1, 3, 8])
def test_lru_cache_computes_exactly_when_functools_lru_cache_misses(size):
    keys = [random.Random(size).randrange(12) for _ in range(500)]
    computed = []
    cache = LRUCache(size)

    @functools.lru_cache(maxsize=size)
    def reference(key):
        return key * 10

    for key in keys:
        misses, calls = reference.cache_info().misses, len(computed)
        assert cache.get(key, lambda k: computed.append(k) or k * 10) == reference(key)
        assert (len(computed) > calls) == (reference.cache_info().misses > misses)   # same step
    assert len(computed) == reference.cache_info().misses
    assert len(cache) == min(size, len(set(keys)))


def test_a_byte_budget_keeps_the_most_recent_values_that_fit():
    """With `max_bytes` the cache keeps, newest first, the values whose weights fit: numpy
    arrays of 100, 200 and 300 bytes under a 550-byte budget, then a value heavier than the
    budget, which is returned and kept by nobody."""
    import numpy as np

    computed = []
    cache = LRUCache(None, max_bytes=550, weigh=lambda value: value.nbytes)

    def get(key, size):
        return cache.get(key, lambda k: computed.append(k) or np.zeros(size, np.uint8))

    get("a", 100), get("b", 200), get("c", 300)            # 600 > 550: "a" goes
    assert len(cache) == 2 and computed == ["a", "b", "c"]
    get("b", 200)                                           # kept: not computed again
    assert computed == ["a", "b", "c"]
    get("a", 100)                                           # "c" is now the oldest: 600 -> 300
    assert computed == ["a", "b", "c", "a"] and len(cache) == 2
    get("c", 300)
    assert computed[-1] == "c" and len(cache) == 2          # "b" went: 100 + 300
    assert get("huge", 1000).nbytes == 1000 and len(cache) == 0
    cache.discard("absent")

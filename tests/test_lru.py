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

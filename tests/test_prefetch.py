"""The prefetching wrapper yields the loader's batches and reports the consumed position."""

import pytest

from samplernn_pase.data.stateful_loader import StatefulLoader
from samplernn_pase.training.prefetch import Prefetcher
from test_stateful_loader import FrameSource


def make_loader():
    return StatefulLoader(FrameSource([9, 12, 5, 20, 7]), list(range(5)), batch_size=2, chunk_frames=3,
                          seed=3, epoch=1)


def test_prefetch_yields_the_same_batches_and_consumed_position():
    plain = [b["where"].tolist() for b in make_loader()]
    prefetched = Prefetcher(make_loader(), depth=4)
    seen = []
    for batch in prefetched:
        seen.append(batch["where"].tolist())
        # The reported position is that of the batches consumed, not read ahead.
        assert prefetched.state_dict()["position"] == len(seen)
    assert seen == plain

    # Stop after 3 batches, resume from the reported position: the rest follows.
    prefetched = Prefetcher(make_loader(), depth=4)
    for count, _ in enumerate(prefetched, 1):
        if count == 3:
            break
    resumed = make_loader()
    resumed.load_state_dict(prefetched.state_dict())
    assert [b["where"].tolist() for b in resumed] == plain[3:]


def test_prefetch_raises_the_loader_error():
    class Broken(FrameSource):
        def chunk(self, item, start, n):
            raise OSError("disk gone")

    loader = StatefulLoader(Broken([6, 6]), [0, 1], batch_size=1, chunk_frames=3, seed=0, epoch=0)
    with pytest.raises(OSError, match="disk gone"):
        list(Prefetcher(loader, depth=2))

"""Prepare batches in a background thread while the model trains (`train --num-workers N`).

The stateful loader must stay sequential (a slot's chunks come in order), so
instead of DataLoader worker processes one thread reads ahead, up to N
batches. The position reported for checkpoints is the one after the last
batch the loop has *consumed*, not the last one read ahead, so exact resume
is unaffected.
"""

import queue
import threading

_END = object()


class Prefetcher:
    def __init__(self, loader, depth: int):
        self.loader = loader
        self.depth = max(1, depth)
        self._position = loader.state_dict()
        self._stop = threading.Event()

    def __len__(self):
        return len(self.loader)

    def _produce(self, out: queue.Queue) -> None:
        try:
            for batch in self.loader:
                if self._stop.is_set():
                    return
                out.put((batch, self.loader.state_dict()))
        except BaseException as error:  # handed to the consumer, raised there
            out.put((error, None))
            return
        out.put((_END, None))

    def __iter__(self):
        out: queue.Queue = queue.Queue(maxsize=self.depth)
        thread = threading.Thread(target=self._produce, args=(out,), daemon=True)
        thread.start()
        try:
            while True:
                batch, position = out.get()
                if batch is _END:
                    return
                if isinstance(batch, BaseException):
                    raise batch
                self._position = position
                yield batch
        finally:
            self._stop.set()
            while thread.is_alive():      # unblock a producer waiting on a full queue
                try:
                    out.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()

    def state_dict(self) -> dict:
        return self._position

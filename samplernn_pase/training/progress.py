"""Progress bars on a terminal, plain periodic lines elsewhere (CI logs, nohup)."""

import sys
import time

from tqdm import tqdm


class PlainProgress:
    """What a tqdm bar would show, as a log line every `every` seconds."""

    def __init__(self, iterable, desc: str, log, every: float = 30.0, total=None, initial=0):
        self.iterable, self.desc, self.log, self.every = iterable, desc, log, every
        self.postfix = {}
        self.count, self.total = initial, total

    def __iter__(self):
        last = time.time()
        for item in self.iterable:
            yield item
            self.count += 1
            if time.time() - last >= self.every:
                last = time.time()
                extra = " ".join(f"{k}={v}" for k, v in self.postfix.items())
                of_total = f" of {self.total}" if self.total else ""
                self.log.info("%s: batch %d%s %s", self.desc, self.count, of_total, extra)

    def set_postfix(self, postfix: dict) -> None:
        self.postfix = postfix

    def close(self) -> None:
        pass


def progress(iterable, desc: str, enabled: bool = True, log=None, total=None, initial=0):
    """A tqdm bar when stderr is a terminal; otherwise plain lines through `log`.

    Both count the batches of the epoch (`initial` of them done before a resume),
    not the global iterations of the log lines."""
    if enabled and sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, initial=initial, unit="batch",
                    dynamic_ncols=True, leave=False)
    if enabled and log is not None:
        return PlainProgress(iterable, desc, log, total=total, initial=initial)
    return PlainProgress(iterable, desc, _Silent())


class _Silent:
    def info(self, *args, **kwargs):
        pass

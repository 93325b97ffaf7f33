"""Python's young-generation garbage collections deferred while requests run.

A request allocates thousands of containers (the parsed body, the validated copies, the stamped
messages, the ledger's items) that stay alive until it ends and are then freed by reference
counting: JSON holds no cycles. CPython collects its youngest generation every 700 net
allocations, and each of those passes walks live request objects to find nothing to free: on
the 500-message benchmark batch they were 3.5% of its instructions (callgrind). While a request
runs the threshold is 50,000 instead, more than that batch ever holds (a few thousand), so
such a request sees no pass; collection is deferred, not stopped, so code that makes cyclic
garbage on every call (moto's transactions copy whole tables; botocore leaves three objects a
call) is still collected as it goes.
"""

from __future__ import annotations

import gc
import threading
from types import TracebackType

YOUNG_THRESHOLD = 50_000


class DeferredCollection:
    """A reentrant, thread-safe `with` block that raises the youngest generation's threshold
    while any holder is inside and restores the thresholds found when the last one leaves."""

    def __init__(self, threshold: int = YOUNG_THRESHOLD) -> None:
        self._threshold = threshold
        self._lock = threading.Lock()
        self._holders = 0
        self._saved = gc.get_threshold()

    def __enter__(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._saved = gc.get_threshold()
                gc.set_threshold(max(self._threshold, self._saved[0]), *self._saved[1:])
            self._holders += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                gc.set_threshold(*self._saved)


deferred_collection = DeferredCollection()

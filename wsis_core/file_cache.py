"""Results computed from files, kept while the files stay the same (same size and modification time)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


def file_stamp(path: str | Path | None) -> tuple | None:
    """(path, modification time in ns, size) of a file; None for no file. Part of a cache key."""
    if path is None:
        return None
    status = Path(path).stat()
    return str(path), status.st_mtime_ns, status.st_size


class LruCache(Generic[T]):
    """The last ``size`` results by key, safe to share between the threads of a server."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The kept result for ``key``, else ``compute()`` (outside the lock), kept."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = compute()
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)

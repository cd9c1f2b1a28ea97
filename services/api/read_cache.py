"""Coalesced polled reads: the status page and API clients poll the same few resources (a run, its
running round, its metrics) every couple of seconds, often many at once.

A read route's result is kept for ``ttl_s`` seconds from the start of the database read that produced it,
and requests for the same resource meanwhile, including those arriving while that read is in flight, share
it: 50 clients polling one round cost one read per ``ttl_s`` instead of 50 (bench/api_load.py). Every
non-read request through this API clears the cache before and after it runs, so a client sees its own
writes at once; writes of the workers (job progress, stage results) show after at most ``ttl_s``.
``ttl_s`` 0 turns caching off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ReadCache:
    """Results of in-flight or recent reads by key (a request's path, query and conditional headers).

    Entries are kept in the order they were made, which is also the order they expire in (one TTL for
    all), so every lookup drops the expired ones from the front: the cache holds at most the reads of
    the last ``ttl_s`` seconds.
    """

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._entries: dict[Hashable, tuple[float, asyncio.Future]] = {}

    async def get(self, key: Hashable, read: Callable[[], Awaitable[Any]]) -> Any:
        """The result of ``read()``, shared with every request for ``key`` within ``ttl_s`` of its start.
        A read that fails is not kept: its waiters get its exception, the next request reads again."""
        if self.ttl_s <= 0:
            return await read()
        now = time.monotonic()
        self._drop_expired(now)
        entry = self._entries.get(key)
        if entry is None:
            entry = (now + self.ttl_s, asyncio.ensure_future(read()))
            self._entries[key] = entry
            entry[1].add_done_callback(lambda future, key=key, entry=entry: self._forget_failed(key, entry, future))
        return await asyncio.shield(entry[1])

    def _drop_expired(self, now: float) -> None:
        expired = []
        for key, (expires, _future) in self._entries.items():
            if expires > now:
                break
            expired.append(key)
        for key in expired:
            del self._entries[key]

    def _forget_failed(self, key: Hashable, entry: tuple[float, asyncio.Future], future: asyncio.Future) -> None:
        if (future.cancelled() or future.exception() is not None) and self._entries.get(key) is entry:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


class InvalidateOnWrite:
    """ASGI middleware: clears ``cache`` before and after every request that is not a read."""

    def __init__(self, app, cache: ReadCache):
        self.app, self.cache = app, cache

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in READ_METHODS:
            await self.app(scope, receive, send)
            return
        self.cache.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            self.cache.clear()

"""The one read-through LRU cache of search hits, shared by the server (``RetrievalService``) and the agent's client
(``RetrieverClient``)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Hashable, Sequence

from cachetools import LRUCache


async def read_through(cache: LRUCache | None, keys: Sequence[Hashable],
                       fetch: Callable[[list], Awaitable[Sequence[Any]]]) -> tuple[list[Any], int]:
    """The value of every key, in order: from ``cache``, and one ``fetch`` of the distinct keys it lacks (whose
    values then enter the cache). Returns the values and how many keys the cache answered. A request with more
    distinct keys than the cache holds is still answered whole (the values are kept here, not read back).

    >>> import asyncio
    >>> async def upper(keys): return [k.upper() for k in keys]
    >>> cache = LRUCache(maxsize=1)
    >>> asyncio.run(read_through(cache, ["a", "b", "a"], upper)), dict(cache)
    ((['A', 'B', 'A'], 0), {'b': 'B'})
    >>> asyncio.run(read_through(cache, ["b"], upper))
    (['B'], 1)
    """
    found = {k: cache[k] for k in keys if cache is not None and k in cache}
    hits = sum(k in found for k in keys)
    missing = [k for k in dict.fromkeys(keys) if k not in found]
    if missing:
        for key, value in zip(missing, await fetch(missing), strict=True):
            found[key] = value
            if cache is not None:
                cache[key] = value
    return [found[k] for k in keys], hits

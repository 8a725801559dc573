"""The async retriever client the agent loop uses: pooled connections, batched requests, a named timeout per call,
bounded retries with exponential backoff, an optional LRU cache. A failure is a ``RetrieverError``, never a fake
passage.

It is built on aiohttp: measured against our server with 16 concurrent clients, httpx's async client spent 3.6 ms
of CPU per request and capped the pair at 263 requests/s on 2 cores; aiohttp spent 0.4 ms and reached 1310.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Sequence

import aiohttp
from cachetools import LRUCache

from autocoa_verl.errors import ConfigError
from retriever_server.lru import read_through


class RetrieverError(RuntimeError):
    """Retrieval failed after the allowed attempts.

    Attributes:
        kind: ``timeout``, ``connection``, ``server`` (5xx), ``bad_request`` (4xx: not retried) or ``bad_response``.
        attempts: how many requests were made.
    """

    def __init__(self, kind: str, message: str, attempts: int):
        super().__init__(f"retriever {kind} after {attempts} attempt(s): {message}")
        self.kind, self.attempts = kind, attempts


@dataclass(frozen=True)
class Passage:
    id: str
    contents: str
    score: float | None = None


class RetrieverClient:
    """Client of the ``/retrieve`` contract (``retriever_server.app``).

    Args:
        url: the server base, e.g. ``http://127.0.0.1:8000`` (``/retrieve`` is appended).
        topk: passages per query unless a call says otherwise.
        timeout_s: per-request timeout (connect + read).
        max_retries: retries after the first attempt, for timeouts, connection errors and 5xx.
        backoff_s: first retry delay, doubled each time.
        max_batch: queries per HTTP request; larger calls are split and sent concurrently.
        cache_size: LRU entries of (query, topk); 0 disables.
        max_connections: connection pool size.
        coalesce_ms: concurrent ``search`` calls share HTTP requests (the rollout's case: many samples of one worker
            each asking one query). While a merged request is in flight, calls wait up to this window to be merged;
            a client with nothing in flight sends at once, so a lone caller never waits. 0 sends each call on its
            own.
    """

    def __init__(self, url: str, topk: int = 3, timeout_s: float = 10.0, max_retries: int = 3,
                 backoff_s: float = 0.2, max_batch: int = 64, cache_size: int = 0, max_connections: int = 64,
                 coalesce_ms: float = 0.0):
        if max_retries < 0 or timeout_s <= 0 or max_batch < 1 or topk < 1 or coalesce_ms < 0:
            raise ValueError("RetrieverClient: need max_retries >= 0, timeout_s > 0, max_batch >= 1, topk >= 1, "
                             "coalesce_ms >= 0")
        self.coalesce_s = coalesce_ms / 1000
        self._pending: dict[int, list[tuple[list[str], asyncio.Future]]] = {}
        self._flush: asyncio.Task | None = None  # the flush collecting calls now, if any
        self._flushing: set[asyncio.Task] = set()  # strong references: the loop only keeps weak ones
        self._in_flight = 0  # merged requests sent and not yet answered
        self.base_url = url.rstrip("/")
        self.url = self.base_url + "/retrieve"
        self.topk, self.timeout_s, self.max_retries = topk, timeout_s, max_retries
        self.backoff_s, self.max_batch = backoff_s, max_batch
        self._cache: LRUCache | None = LRUCache(cache_size) if cache_size > 0 else None
        self.max_connections = max_connections
        self._http: aiohttp.ClientSession | None = None
        self.cache_hits = 0

    async def __aenter__(self) -> "RetrieverClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                               connector=aiohttp.TCPConnector(limit=self.max_connections))
        return self._http

    async def health(self) -> dict[str, Any]:
        """``GET /health`` (the server's backend and document count), once: a probe asks whether the server is there
        now. Raises ``RetrieverError``."""
        try:
            async with self._client().get(self.base_url + "/health") as response:
                status, body = response.status, await response.read()
        except asyncio.TimeoutError:
            raise RetrieverError("timeout", f"no answer within {self.timeout_s}s", 1) from None
        except aiohttp.ClientError as error:
            raise RetrieverError("connection", f"{type(error).__name__}: {error}", 1) from None
        if status != 200:
            raise RetrieverError("server" if status >= 500 else "bad_request", f"HTTP {status} from /health", 1)
        try:
            return json.loads(body)
        except ValueError:
            raise RetrieverError("bad_response", f"/health answered no JSON: {body[:100]!r}", 1) from None

    async def search(self, queries: Sequence[str], topk: int | None = None) -> list[list[Passage]]:
        """Top-``topk`` passages per query, in order. Raises ``RetrieverError``."""
        topk = topk or self.topk

        async def fetch(keys: list[tuple[str, int]]) -> list[list[Passage]]:
            missing = [q for q, _ in keys]
            return await (self._coalesced(missing, topk) if self.coalesce_s > 0 else self._fetch(missing, topk))

        results, hits = await read_through(self._cache, [(q, topk) for q in queries], fetch)
        self.cache_hits += hits
        return results

    async def _fetch(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """One HTTP request per ``max_batch`` queries, sent concurrently."""
        chunks = [queries[i : i + self.max_batch] for i in range(0, len(queries), self.max_batch)]
        return [hits for part in await asyncio.gather(*(self._post(c, topk) for c in chunks)) for hits in part]

    async def _coalesced(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """Queues the call; a flush sends everything queued by the time it runs: at once when nothing is in flight
        (every call made in the same event-loop turn is merged), else ``coalesce_ms`` after the first queued call."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.setdefault(topk, []).append((queries, future))
        if self._flush is None:  # no flush is collecting: start one
            self._flush = loop.create_task(self._flush_pending())
            self._flushing.add(self._flush)
            self._flush.add_done_callback(self._flushing.discard)
        return await future

    async def _flush_pending(self) -> None:
        if self._in_flight:
            await asyncio.sleep(self.coalesce_s)
        # from here on, calls queue for the next flush (one that arrives while this one fetches starts it)
        pending, self._pending, self._flush = self._pending, {}, None
        for topk, calls in pending.items():
            merged = [q for queries, _ in calls for q in queries]
            self._in_flight += 1
            try:
                hits = await self._fetch(merged, topk)
            except Exception as error:  # every waiting call gets the failure, none is left hanging
                for _, future in calls:
                    if not future.done():
                        future.set_exception(error)
                continue
            finally:
                self._in_flight -= 1
            start = 0
            for queries, future in calls:
                if not future.done():
                    future.set_result(hits[start : start + len(queries)])
                start += len(queries)

    async def _post(self, queries: list[str], topk: int) -> list[list[Passage]]:
        payload = {"queries": queries, "topk": topk, "return_scores": True}
        attempt, last_kind, last_message = 0, "", ""
        while attempt <= self.max_retries:
            if attempt:
                await self._backoff(attempt)
            attempt += 1
            try:
                async with self._client().post(self.url, json=payload) as response:
                    status, body = response.status, await response.read()
            except asyncio.TimeoutError:
                last_kind, last_message = "timeout", f"no answer within {self.timeout_s}s"
                continue
            except aiohttp.ClientError as error:
                last_kind, last_message = "connection", f"{type(error).__name__}: {error}"
                continue
            if status >= 500:
                last_kind, last_message = "server", f"HTTP {status}: {body[:300].decode(errors='replace')}"
                continue
            if status >= 400:
                raise RetrieverError("bad_request", f"HTTP {status}: {body[:300].decode(errors='replace')}", attempt)
            return self._parse(body, len(queries), attempt)
        raise RetrieverError(last_kind, last_message, attempt)

    async def _backoff(self, retry: int) -> None:
        """The wait before retry number ``retry`` (1, 2, ...): ``backoff_s`` doubled each time."""
        await asyncio.sleep(self.backoff_s * 2 ** (retry - 1))

    @staticmethod
    def _parse(body: bytes, expected: int, attempt: int) -> list[list[Passage]]:
        try:
            result = json.loads(body)["result"]
            if len(result) != expected:
                raise ValueError(f"{len(result)} result lists for {expected} queries")
            return [[Passage(str(h["document"]["id"]), h["document"]["contents"], float(h["score"])) for h in hits]
                    for hits in result]
        except (ValueError, KeyError, TypeError) as error:
            raise RetrieverError("bad_response", f"{type(error).__name__}: {error}", attempt) from None



def check_retriever(url: str, field: str, timeout_s: float = 5.0, wait_s: float = 0.0) -> dict[str, Any]:
    """A blocking :meth:`RetrieverClient.health` for preflight checks: the server's health, asked every 0.5 s for up
    to ``wait_s`` (a server still starting), or a ``ConfigError`` that names the config ``field`` holding ``url``."""

    async def probe() -> dict[str, Any]:
        deadline = time.monotonic() + wait_s
        async with RetrieverClient(url, timeout_s=timeout_s) as client:
            while True:
                try:
                    return await client.health()
                except RetrieverError:
                    if time.monotonic() >= deadline:
                        raise
                await asyncio.sleep(0.5)

    try:
        return asyncio.run(probe())
    except RetrieverError as error:
        within = f" within {wait_s:.0f} s" if wait_s else ""
        raise ConfigError(f"{field}={url!r}: no retriever answered /health{within} ({error})") from None

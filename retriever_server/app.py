"""The retrieval service: ``RetrievalService`` (validation, cache, batched search; no HTTP) and ``create_app``, the thin
FastAPI app over it (no module globals).

Speaks the contract of Search-R1's retrieval server and verl's former SearchTool::

    POST /retrieve {"queries": ["..."], "topk": 3, "return_scores": true}   (or {"query": "..."})
      -> {"result": [[{"document": {"id", "contents"}, "score": 1.2}, ...] per query]}
         (with "return_scores": false each hit is the bare document, as in Search-R1)
    GET /health -> {"status": "ok", "backend", "documents"}
    GET /stats  -> requests, queries, errors, latency p50/p99, backend batch sizes, cache hits

Concurrent requests are merged into one backend ``batch_search`` (``QueryBatcher``): under load the backend sees
large batches, which is where bm25s and faiss are fast.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import psutil
from cachetools import LRUCache
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from retriever_server.lru import read_through


class RetrieveRequest(BaseModel):
    queries: list[str] | None = None
    query: str | None = None
    topk: int | None = None
    return_scores: bool = False


@dataclass
class ServerStats:
    """Counters and recent latencies/batch sizes (the last ``window`` of each)."""

    window: int = 10_000
    requests: int = 0
    queries: int = 0
    client_errors: int = 0
    server_errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    started: float = field(default_factory=time.time)
    latencies_ms: deque = field(default_factory=deque)
    batch_sizes: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.latencies_ms = deque(maxlen=self.window)
        self.batch_sizes = deque(maxlen=self.window)

    def snapshot(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

        batches = list(self.batch_sizes)
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "requests": self.requests,
            "queries": self.queries,
            "client_errors": self.client_errors,
            "server_errors": self.server_errors,
            "latency_ms": {"p50": pct(0.50), "p99": pct(0.99), "window": len(lat)},
            "backend_batches": {"count": len(batches), "mean_size": round(sum(batches) / len(batches), 2)
                                if batches else None, "max_size": max(batches, default=None)},
            "cache": {"hits": self.cache_hits, "misses": self.cache_misses},
            "memory_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        }


@dataclass
class _Pending:
    queries: list[str]
    topk: int
    future: asyncio.Future


class QueryBatcher:
    """Dynamic batching: one backend call at a time, in a worker thread (so the event loop keeps accepting); each
    call takes every request queued meanwhile (up to ``max_batch_queries`` queries), and with ``max_wait_s`` > 0
    also waits that long for more. Under load the batches grow by themselves; an idle server answers at once."""

    def __init__(self, retriever: Any, stats: ServerStats, max_batch_queries: int = 512, max_wait_s: float = 0.0):
        self.retriever, self.stats = retriever, stats
        self.max_batch_queries, self.max_wait_s = max_batch_queries, max_wait_s
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Starts the worker on the running event loop (again, if the app now runs on another loop)."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        if self._executor is not None:  # left by a previous loop that ended without the lifespan's stop()
            self._executor.shutdown(wait=False)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retriever")
        self._worker = self._loop.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._loop = None

    async def search(self, queries: list[str], topk: int) -> tuple[list[list[dict]], list[list[float]]]:
        if self._loop is not asyncio.get_running_loop():
            self.start()
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(queries, topk, future))
        return await future

    async def _collect(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        size = len(batch[0].queries)
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while size < self.max_batch_queries:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                item = self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self._queue.get(),
                                                                                             remaining)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            batch.append(item)
            size += len(item.queries)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            queries = [q for item in batch for q in item.queries]
            topk = max(item.topk for item in batch)
            self.stats.batch_sizes.append(len(queries))
            try:
                docs, scores = await loop.run_in_executor(
                    self._executor, lambda: self.retriever.batch_search(queries, topk, return_scores=True))
            except Exception as error:  # reported to every waiting request, never swallowed
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            start = 0
            for item in batch:
                end = start + len(item.queries)
                if not item.future.done():
                    item.future.set_result(([d[: item.topk] for d in docs[start:end]],
                                            [s[: item.topk] for s in scores[start:end]]))
                start = end


class RequestError(ValueError):
    """A request the service refuses: the HTTP status and the field it is about (``loc``, FastAPI's shape)."""

    def __init__(self, status: int, loc: list, message: str):
        super().__init__(message)
        self.status, self.loc, self.message = status, loc, message


class RetrievalService:
    """What ``/retrieve`` does, without HTTP: validate a request, answer it from the cache or the batched backend,
    keep the stats.

    Args:
        default_topk: ``topk`` when a request gives none.
        max_topk: larger ``topk`` is a 422.
        max_batch: more queries in one request is a 413.
        max_query_chars: a longer query is a 422.
        cache_size: LRU entries of (query, topk) -> hits kept in memory (0 disables).
        batch_wait_ms: how long the batcher waits for more requests to merge (0: only what is already queued).
        max_batch_queries: the largest merged backend batch.
    """

    def __init__(self, retriever: Any, *, default_topk: int = 3, max_topk: int = 100, max_batch: int = 1024,
                 max_query_chars: int = 2048, cache_size: int = 0, batch_wait_ms: float = 0.0,
                 max_batch_queries: int = 512):
        self.retriever, self.stats = retriever, ServerStats()
        self.default_topk, self.max_topk, self.max_batch = default_topk, max_topk, max_batch
        self.max_query_chars = max_query_chars
        self.batcher = QueryBatcher(retriever, self.stats, max_batch_queries=max_batch_queries,
                                    max_wait_s=batch_wait_ms / 1000)
        self.cache: LRUCache | None = LRUCache(maxsize=cache_size) if cache_size > 0 else None
        self._health = {"status": "ok", "backend": getattr(retriever, "backend", type(retriever).__name__),
                        "documents": len(getattr(retriever, "corpus", []) or [])}

    def health(self) -> dict[str, Any]:
        return self._health

    def validate(self, request: RetrieveRequest) -> tuple[list[str], int]:
        """The request's queries and topk; raises :class:`RequestError` naming the field."""
        if request.queries is not None and request.query is not None:
            raise RequestError(422, ["queries"], "give either 'queries' or 'query', not both")
        if request.queries is None and request.query is None:
            raise RequestError(422, ["queries"], "field required: 'queries' (a list of strings) or 'query'")
        queries = request.queries if request.queries is not None else [request.query]
        if not queries:
            raise RequestError(422, ["queries"], "must not be empty")
        if len(queries) > self.max_batch:
            raise RequestError(413, ["queries"], f"{len(queries)} queries in one request; the limit is "
                                                 f"{self.max_batch}")
        for i, query in enumerate(queries):
            if not query.strip():
                raise RequestError(422, ["queries", i], "empty query")
            if len(query) > self.max_query_chars:
                raise RequestError(422, ["queries", i], f"query of {len(query)} characters; the limit is "
                                                        f"{self.max_query_chars}")
        topk = self.default_topk if request.topk is None else request.topk
        if not 1 <= topk <= self.max_topk:
            raise RequestError(422, ["topk"], f"must be between 1 and {self.max_topk}, got {topk}")
        return queries, topk

    async def search(self, queries: list[str], topk: int) -> tuple[list, list]:
        """Hits and scores per query, through the LRU cache (if any) and the batcher."""

        async def fetch(keys: list[tuple[str, int]]) -> list[tuple[list, list]]:
            docs, scores = await self.batcher.search([q for q, _ in keys], topk)
            self.stats.cache_misses += len(keys) if self.cache is not None else 0
            return list(zip(docs, scores))

        results, hits = await read_through(self.cache, [(q, topk) for q in queries], fetch)
        self.stats.cache_hits += hits
        return [r[0] for r in results], [r[1] for r in results]

    async def retrieve(self, request: RetrieveRequest) -> dict[str, Any]:
        """The response body of one request. Raises :class:`RequestError`, or the backend's own error."""
        start = time.perf_counter()
        self.stats.requests += 1
        try:
            queries, topk = self.validate(request)
        except RequestError:
            self.stats.client_errors += 1
            raise
        self.stats.queries += len(queries)
        try:
            docs, scores = await self.search(queries, topk)
        except Exception:
            self.stats.server_errors += 1
            raise
        if request.return_scores:
            result = [[{"document": d, "score": s} for d, s in zip(ds, ss)] for ds, ss in zip(docs, scores)]
        else:
            result = docs
        self.stats.latencies_ms.append((time.perf_counter() - start) * 1000)
        return {"result": result}


def create_app(retriever: Any, **options: Any) -> FastAPI:
    """The FastAPI app serving ``retriever`` (anything with FlashRAG's ``batch_search``); ``options`` are
    :class:`RetrievalService`'s."""
    service = RetrievalService(retriever, **options)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()
        yield
        await service.batcher.stop()

    app = FastAPI(title="autocoa retriever", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        """FastAPI's 422 without the offending ``input`` echoed back: a body such as ``Infinity`` cannot be written
        as JSON, and echoing it turned a client error into a 500."""
        service.stats.client_errors += 1
        return JSONResponse(status_code=422, content={"detail": [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]})

    @app.post("/retrieve")
    async def retrieve(request: RetrieveRequest) -> Response:
        try:
            body = await service.retrieve(request)
        except RequestError as error:  # shaped like FastAPI's own validation errors, naming the field
            raise HTTPException(status_code=error.status, detail=[{"loc": ["body", *error.loc],
                                                                   "msg": error.message}]) from None
        except Exception as error:
            raise HTTPException(status_code=500, detail=f"retriever failed: {type(error).__name__}: {error}")
        # the hot path: skip FastAPI's response-model round trip
        return Response(content=orjson.dumps(body), media_type="application/json")

    @app.get("/health")
    async def health() -> dict:
        return service.health()

    @app.get("/stats")
    async def get_stats() -> dict:
        return service.stats.snapshot()

    return app

"""The retriever client against a real server on loopback: contract, load, faults."""

import asyncio
import time

import httpx
import pytest

from autocoa_verl.agent.retriever_client import Passage, RetrieverClient, RetrieverError
from retriever_server.serve import ServerThread, free_port
from retriever_server.app import create_app


def _search(url, queries, **kwargs):
    async def run():
        async with RetrieverClient(url, **kwargs) as client:
            return await client.search(queries)

    return asyncio.run(run())


def test_search_returns_passages_in_query_order(bm25_server, bm25):
    async def run():
        async with RetrieverClient(bm25_server.url, topk=2, max_batch=3) as client:
            return await client.search(["Arlo founder", "region", "q3", "q4", "Arlo founder"])

    results = asyncio.run(run())
    assert len(results) == 5 and all(len(r) == 2 for r in results)
    assert isinstance(results[0][0], Passage) and results[0] == results[4]
    docs, scores = bm25.batch_search(["region"], 2, return_scores=True)
    assert [(p.id, p.contents, p.score) for p in results[1]] == [
        (d["id"], d["contents"], pytest.approx(s)) for d, s in zip(docs[0], scores[0])]


def test_client_cache(bm25_server):
    async def run():
        async with RetrieverClient(bm25_server.url, cache_size=8) as client:
            first = await client.search(["founder of Quessly"])
            second = await client.search(["founder of Quessly"])
            return first, second, client.cache_hits

    first, second, hits = asyncio.run(run())
    assert first == second and hits == 1


def test_bounded_concurrent_load_has_no_errors(bm25_server):
    async def one_client(i: int, client: RetrieverClient) -> int:
        ok = 0
        for j in range(20):
            result = await client.search([f"client {i} founder", f"request {j} region"], topk=3)
            ok += len(result) == 2 and all(len(r) == 3 for r in result)
        return ok

    async def run():
        async with RetrieverClient(bm25_server.url, timeout_s=30) as client:
            return await asyncio.gather(*(one_client(i, client) for i in range(32)))

    assert asyncio.run(run()) == [20] * 32
    stats = httpx.get(f"{bm25_server.url}/stats").json()
    assert stats["server_errors"] == 0 and stats["requests"] >= 640


def test_bad_request_is_not_retried(bm25_server):
    with pytest.raises(RetrieverError) as error:
        _search(bm25_server.url, ["   "], max_retries=3)
    assert (error.value.kind, error.value.attempts) == ("bad_request", 1)
    assert "empty query" in str(error.value)


def test_server_down_then_restarted_while_client_retries(bm25, monkeypatch):
    """The server comes back during the client's first backoff (no wall-clock race): the retry gets the answer."""
    server = ServerThread(create_app(bm25)).start()
    server.stop()
    retries = []
    backoff = RetrieverClient._backoff

    async def restart_then_wait(self, retry):
        retries.append(retry)
        if retry == 1:
            server.start()
        await backoff(self, retry)

    monkeypatch.setattr(RetrieverClient, "_backoff", restart_then_wait)
    try:
        result = _search(server.url, ["Arlo founder"], timeout_s=5, max_retries=6, backoff_s=0.05)
        assert len(result[0]) == 3 and retries == [1]
    finally:
        server.stop()


def test_server_gone_raises_typed_error_within_budget(monkeypatch):
    """What a dead server costs is bounded: max_retries + 1 attempts, each under timeout_s, with a backoff before
    each retry. Checked on the client's own steps, not against the wall clock of a busy machine."""
    url = f"http://127.0.0.1:{free_port()}"
    retries, timeouts = [], []
    backoff = RetrieverClient._backoff

    async def record(self, retry):
        retries.append(retry)
        timeouts.append(self._client().timeout.total)
        await backoff(self, retry)

    monkeypatch.setattr(RetrieverClient, "_backoff", record)
    with pytest.raises(RetrieverError) as error:
        _search(url, ["q"], timeout_s=1.0, max_retries=3, backoff_s=0.1)
    assert (error.value.kind, error.value.attempts) == ("connection", 4)
    assert retries == [1, 2, 3] and timeouts == [1.0, 1.0, 1.0]


def test_slow_server_times_out_as_typed_error(bm25):
    class Slow:
        backend, corpus = "slow", bm25.corpus

        def batch_search(self, queries, topk, return_scores=False):
            time.sleep(1.0)
            return bm25.batch_search(queries, topk, return_scores)

    server = ServerThread(create_app(Slow())).start()
    try:
        with pytest.raises(RetrieverError) as error:
            _search(server.url, ["q"], timeout_s=0.3, max_retries=1, backoff_s=0.05)
        assert (error.value.kind, error.value.attempts) == ("timeout", 2)
    finally:
        server.stop()


def test_bad_response_is_typed():
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/retrieve")
    async def wrong() -> dict:
        return {"result": [[{"doc": "no document key"}]]}

    server = ServerThread(app).start()
    try:
        with pytest.raises(RetrieverError) as error:
            _search(server.url, ["q"])
        assert error.value.kind == "bad_response"
    finally:
        server.stop()


def test_coalescing_merges_concurrent_calls_into_few_requests(bm25):
    server = ServerThread(create_app(bm25)).start()
    queries = [f"query {i} founder" for i in range(24)]
    try:
        async def run(coalesce_ms):
            async with RetrieverClient(server.url, topk=2, coalesce_ms=coalesce_ms, max_batch=10) as client:
                return await asyncio.gather(*(client.search([q]) for q in queries))

        alone = asyncio.run(run(0))
        requests_before = httpx.get(f"{server.url}/stats").json()["requests"]
        merged = asyncio.run(run(5))
        requests = httpx.get(f"{server.url}/stats").json()["requests"] - requests_before
    finally:
        server.stop()
    assert merged == alone  # each call still gets its own query's passages, in order
    assert requests == 3  # 24 queries in one flush, max_batch 10 -> 3 requests instead of 24


def test_coalesced_failure_reaches_every_caller():
    url = f"http://127.0.0.1:{free_port()}"

    async def run():
        async with RetrieverClient(url, coalesce_ms=2, max_retries=0, timeout_s=1) as client:
            return await asyncio.gather(*(client.search([f"q{i}"]) for i in range(5)), return_exceptions=True)

    outcomes = asyncio.run(run())
    assert all(isinstance(o, RetrieverError) and o.kind == "connection" for o in outcomes)


def test_a_call_queued_while_a_flush_is_fetching_is_flushed_too(bm25):
    """Regression: a call arriving after a flush stopped collecting (while it waits on HTTP) used to wait forever."""
    server = ServerThread(create_app(bm25)).start()
    try:
        async def run():
            async with RetrieverClient(server.url, topk=2, coalesce_ms=1, timeout_s=5) as client:
                first = asyncio.ensure_future(client.search(["first founder"]))
                while not client._pending:  # queued
                    await asyncio.sleep(0)
                while client._pending:  # taken by the flush, which now waits on HTTP
                    await asyncio.sleep(0)
                assert not first.done()
                late = await asyncio.wait_for(client.search(["late founder"]), timeout=10)
                return await first, late

        first, late = asyncio.run(run())
    finally:
        server.stop()
    assert len(first[0]) == 2 and len(late[0]) == 2


def test_an_idle_coalescing_client_sends_at_once_and_merges_while_busy(bm25):
    """A lone call does not wait the window (here 60 s, past the test's 10 s limit); calls made while a request is in
    flight wait it out and share one request."""
    server = ServerThread(create_app(bm25)).start()
    try:
        async def run():
            async with RetrieverClient(server.url, topk=2, coalesce_ms=60_000, timeout_s=5) as client:
                lone = await asyncio.wait_for(client.search(["lone founder"]), timeout=10)
                client.coalesce_s = 0.05
                first = asyncio.ensure_future(client.search(["first founder"]))
                while not client._in_flight:
                    await asyncio.sleep(0)
                busy = await asyncio.gather(*(client.search([f"busy {i} founder"]) for i in range(5)))
                return lone, await first, busy

        before = httpx.get(f"{server.url}/stats").json()["requests"]
        lone, first, busy = asyncio.run(run())
        requests = httpx.get(f"{server.url}/stats").json()["requests"] - before
    finally:
        server.stop()
    assert len(lone[0]) == 2 and len(first[0]) == 2 and all(len(b[0]) == 2 for b in busy)
    assert requests == 3  # the lone call, the first, the five merged


def test_health_answers_or_raises_at_once(bm25_server):
    async def probe(url):
        async with RetrieverClient(url, timeout_s=2, max_retries=3) as client:
            return await client.health()

    assert asyncio.run(probe(bm25_server.url))["backend"] == "bm25"
    with pytest.raises(RetrieverError) as error:
        asyncio.run(probe(f"http://127.0.0.1:{free_port()}"))
    assert (error.value.kind, error.value.attempts) == ("connection", 1)  # a probe is not retried

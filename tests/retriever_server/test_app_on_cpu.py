import asyncio
import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from retriever_server.app import RequestError, RetrievalService, RetrieveRequest, create_app


class RecordingRetriever:
    """The real BM25 retriever, recording the size of every backend batch it is asked for."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []
        self.backend, self.corpus = inner.backend, inner.corpus

    def batch_search(self, queries, topk, return_scores=False):
        self.batches.append(len(queries))
        return self.inner.batch_search(queries, topk, return_scores)


async def _call(app, method, path, **kw):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path, **kw)


def _post(app, body):
    return asyncio.run(_call(app, "POST", "/retrieve", json=body))


def test_contract_round_trip(bm25):
    app = create_app(bm25)
    body = _post(app, {"queries": ["Arlo founder", "region"], "topk": 2, "return_scores": True}).json()
    assert len(body["result"]) == 2 and len(body["result"][0]) == 2
    hit = body["result"][0][0]
    assert set(hit) == {"document", "score"} and set(hit["document"]) == {"id", "contents"}
    expected = bm25.batch_search(["Arlo founder"], 2, return_scores=True)
    assert [h["document"] for h in body["result"][0]] == expected[0][0]
    # Search-R1 shape without scores, the single-"query" form, and the default topk (3)
    bare = _post(app, {"query": "Arlo founder"}).json()["result"]
    assert len(bare) == 1 and len(bare[0]) == 3 and set(bare[0][0]) == {"id", "contents"}


@pytest.mark.parametrize(
    "body, status, loc, message",
    [
        ({"queries": []}, 422, ["body", "queries"], "must not be empty"),
        ({"queries": ["ok", "  "]}, 422, ["body", "queries", 1], "empty query"),
        ({"queries": ["q"] * 9}, 413, ["body", "queries"], "9 queries in one request; the limit is 8"),
        ({"queries": ["x" * 65]}, 422, ["body", "queries", 0], "query of 65 characters; the limit is 64"),
        ({"queries": ["q"], "topk": 0}, 422, ["body", "topk"], "must be between 1 and 5, got 0"),
        ({"queries": ["q"], "topk": 6}, 422, ["body", "topk"], "must be between 1 and 5, got 6"),
        ({}, 422, ["body", "queries"], "field required"),
        ({"queries": ["q"], "query": "q"}, 422, ["body", "queries"], "not both"),
        ({"queries": "not a list"}, 422, ["body", "queries"], "list"),
        ({"queries": [1, 2]}, 422, ["body", "queries", 0], "string"),
        ({"queries": ["q"], "topk": "three"}, 422, ["body", "topk"], "integer"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(bm25, body, status, loc, message):
    app = create_app(bm25, max_batch=8, max_query_chars=64, max_topk=5)
    response = _post(app, body)
    assert response.status_code == status
    detail = response.json()["detail"][0]
    assert detail["loc"] == loc
    assert message.lower() in detail["msg"].lower()


def test_concurrent_requests_are_merged_into_backend_batches(bm25):
    recorder = RecordingRetriever(bm25)
    app = create_app(recorder, batch_wait_ms=20)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async with app.router.lifespan_context(app):
                responses = await asyncio.gather(*(
                    client.post("/retrieve", json={"queries": [f"query {i}", "founder"], "topk": 1 + i % 3})
                    for i in range(16)))
                stats = (await client.get("/stats")).json()
        return responses, stats

    responses, stats = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert [len(r.json()["result"][0]) for r in responses] == [1 + i % 3 for i in range(16)]
    assert sum(recorder.batches) == 32 and len(recorder.batches) < 16  # merged
    assert stats["requests"] == 16 and stats["queries"] == 32
    assert stats["backend_batches"]["max_size"] == max(recorder.batches)
    assert stats["latency_ms"]["p50"] > 0


def test_cache_hits_are_counted_and_results_identical(bm25):
    app = create_app(bm25, cache_size=16)
    first = _post(app, {"queries": ["Arlo founder", "x region"], "return_scores": True}).json()
    second = _post(app, {"queries": ["x region", "Arlo founder"], "return_scores": True}).json()
    assert second["result"] == first["result"][::-1]
    stats = asyncio.run(_call(app, "GET", "/stats")).json()
    assert stats["cache"] == {"hits": 2, "misses": 2}


def test_backend_failure_is_a_500_with_the_reason(bm25):
    class Broken:
        backend, corpus = "broken", []

        def batch_search(self, queries, topk, return_scores=False):
            raise OSError("index file vanished")

    response = _post(create_app(Broken()), {"queries": ["q"]})
    assert response.status_code == 500
    assert "OSError: index file vanished" in response.json()["detail"]


def test_health(bm25):
    assert asyncio.run(_call(create_app(bm25), "GET", "/health")).json() == {
        "status": "ok", "backend": "bm25", "documents": len(bm25.corpus)}


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4), max_leaves=10)
_field_values = {
    "queries": _json | st.lists(st.text(max_size=80), max_size=10),
    "query": _json | st.text(max_size=80),
    "topk": _json | st.integers(-3, 12),
    "return_scores": _json,
}
_request_body = st.fixed_dictionaries({}, optional=_field_values) | _json  # near-valid requests, and anything


@given(body=_request_body)
def test_fuzzed_bodies_get_a_result_or_a_4xx_naming_the_field(bm25, body):
    app = create_app(bm25, max_batch=8, max_query_chars=64, max_topk=5)
    response = asyncio.run(_call(app, "POST", "/retrieve", content=json.dumps(body),
                                 headers={"content-type": "application/json"}))
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        queries = body["queries"] if body.get("queries") is not None else [body["query"]]
        assert len(response.json()["result"]) == len(queries)
        return
    assert 400 <= response.status_code < 500
    for error in response.json()["detail"]:
        assert error["loc"][0] == "body" and error["msg"]
        if isinstance(body, dict):  # a request object: the error names the field (or the item) it is about
            assert len(error["loc"]) >= 2, error


@given(body=st.binary(max_size=40))
def test_bytes_that_are_not_json_are_a_4xx_about_the_body(bm25, body):
    response = asyncio.run(_call(create_app(bm25), "POST", "/retrieve", content=body,
                                 headers={"content-type": "application/json"}))
    assert response.status_code in (200, 400, 422), response.text  # 200 only when the bytes are a valid request
    if response.status_code != 200:  # 400: not UTF-8 (Starlette); 422: not JSON, or not a request object
        assert "body" in response.text


def test_the_service_answers_and_refuses_without_http(bm25):
    service = RetrievalService(bm25, max_topk=5, cache_size=4)
    body = asyncio.run(service.retrieve(RetrieveRequest(query="Arlo founder", topk=2, return_scores=True)))
    docs, scores = bm25.batch_search(["Arlo founder"], 2, return_scores=True)
    assert body == {"result": [[{"document": d, "score": s} for d, s in zip(docs[0], scores[0])]]}
    with pytest.raises(RequestError) as error:
        asyncio.run(service.retrieve(RetrieveRequest(queries=["ok"], topk=9)))
    assert (error.value.status, error.value.loc) == (422, ["topk"])
    assert (service.stats.requests, service.stats.client_errors, service.stats.queries) == (2, 1, 1)


def test_a_request_with_more_queries_than_the_cache_holds_is_answered_whole(bm25):
    """Regression: the server read every hit back from a 2-entry cache after filling it with 3 (KeyError, a 500)."""
    response = _post(create_app(bm25, cache_size=2), {"queries": ["a founder", "b region", "c birthplace"]})
    assert response.status_code == 200 and len(response.json()["result"]) == 3

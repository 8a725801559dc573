"""The retriever benchmark's pieces: the plain-handler reference answers like the server, the issue's keys."""

import asyncio

from autocoa_verl.agent.retriever_client import RetrieverClient
from benchmarks.retriever_bench import latency_row, markdown, pooled, reference_app, summarise
from retriever_server.app import create_app
from retriever_server.serve import ServerThread


def _search(url, queries):
    async def run():
        async with RetrieverClient(url, topk=3) as client:
            return await client.search(queries)

    return asyncio.run(run())


def test_reference_handler_answers_as_the_server_does(bm25):
    queries = ["Arlo founder", "region of Quessly", "Arlo founder"]
    reference, ours = ServerThread(reference_app(bm25)).start(), ServerThread(create_app(bm25)).start()
    try:
        assert _search(reference.url, queries) == _search(ours.url, queries)
    finally:
        reference.stop()
        ours.stop()


def _row(clients, p50, pct, p99_over_p50=2.0, errors=0):
    return {"clients": clients, "requests": 100, "queries_per_s": 1.0, "pct_of_ceiling": pct, "p50_ms": p50,
            "p99_ms": p50 * p99_over_p50, "p99_over_p50": p99_over_p50, "errors": errors}


def _report(**dense_64):
    backend = {"build_seconds": 1.0, "ceiling_qps": 100.0, "server_rss_mb": 1.0}
    return {"passages": 10, "topk": 3, "mode": "uvicorn", "client_coalesce_ms": 2.0, "server_overrides": [],
            "queries_per_request": 1, "options": {}, "backends": [
                backend | {"backend": "bm25", "reference": _row(1, 2.0, 1.0),
                           "load": [_row(1, 2.1, 1.0), _row(64, 9.0, 80.0)]},
                backend | {"backend": "dense", "reference": _row(1, 10.0, 1.0),
                           "load": [_row(1, 12.0, 1.0), _row(64, 30.0, 75.0) | dense_64]}]}


def test_summary_keys_and_targets():
    report = _report()
    keys = summarise(report)
    # the worst backend's lone-client ratio: dense 12 / 10
    assert keys == {"bm25_pct_ceiling_64": 80.0, "dense_pct_ceiling_64": 75.0, "single_client_latency_ratio": 1.2,
                    "targets_met": False}
    assert [b["single_client_latency_ratio"] for b in report["backends"]] == [1.05, 1.2]
    assert "| dense | plain handler |" in markdown(report | keys)


def test_targets_need_every_backend_at_64_clients():
    report = _report()
    report["backends"][1]["load"][0]["p50_ms"] = 10.5
    assert summarise(report)["targets_met"] is True
    errors = _report(errors=1)
    errors["backends"][1]["load"][0]["p50_ms"] = 10.5
    assert summarise(errors)["targets_met"] is False
    no_64 = _report()
    no_64["backends"][0]["load"].pop()
    no_64["backends"][1]["load"][0]["p50_ms"] = 10.5
    keys = summarise(no_64)
    assert keys["bm25_pct_ceiling_64"] is None and keys["targets_met"] is False


def test_rounds_pool_their_samples():
    rounds = [latency_row([1.0, 2.0, 3.0], wall=1.0, clients=1, per_request=1, errors=0),
              latency_row([5.0, 6.0], wall=1.0, clients=1, per_request=1, errors=1)]
    row = pooled(rounds)
    assert (row["requests"], row["errors"], row["p50_ms"], row["queries_per_s"]) == (6, 1, 3.0, 2.5)

"""Retriever benchmark: throughput and latency through the HTTP server at several client concurrencies, beside the
in-process ``batch_search`` ceiling and a plain synchronous handler (the lone client's latency reference), all
measured in the same run, on a toy world of >= 100k passages.

Run: ``make bench-retriever`` or ``python benchmarks/retriever_bench.py --out build/bench/retriever [--help]``.
Writes ``report.json`` and ``report.md`` into ``--out``. The world and the indexes are cached there between runs
(an index is reused only if its manifest matches; the build time reported is the one its manifest recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autocoa_verl.agent.retriever_client import RetrieverClient, RetrieverError  # noqa: E402
from autocoa_verl.data.toy_world import ToyWorldConfig, build_toy_world  # noqa: E402
from retriever_server.base import IndexMismatchError  # noqa: E402
from retriever_server.bm25 import BM25Retriever  # noqa: E402
from retriever_server.dense import DenseRetriever  # noqa: E402
from retriever_server.serve import free_port  # noqa: E402
from benchmarks.provenance import provenance, write_report  # noqa: E402

BACKENDS = {"bm25": BM25Retriever, "dense": DenseRetriever}


def world(out: Path, passages: int) -> tuple[Path, list[str]]:
    """A toy world of about ``passages`` passages (cached) and its pool of sub-question search queries."""
    people, cities, regions = int(passages * 0.8), int(passages * 0.1), 50
    config = ToyWorldConfig(seed=0, people=people, cities=cities, orgs=passages - people - cities - regions,
                            regions=regions, train=3000, dev=0, test=0)
    world_dir = out / f"world-{passages}"
    manifest = world_dir / "manifest.json"
    if not manifest.exists() or json.loads(manifest.read_text())["config"]["people"] != config.people:
        build_toy_world(config, world_dir)
    rows = [json.loads(line) for line in open(world_dir / "train.jsonl")]
    queries = [step["query"] for row in rows for step in row["chain"]]
    return world_dir / "corpus.jsonl", queries


def index(backend: str, corpus: Path, out: Path, options: dict) -> tuple[object, dict]:
    cls, index_dir = BACKENDS[backend], out / f"index-{backend}-{corpus.parent.name}"
    try:
        retriever = cls.open(corpus, index_dir, **options)
    except IndexMismatchError:
        retriever = cls.build(corpus, index_dir, **options)
    return retriever, json.loads((index_dir / "manifest.json").read_text()) | {"index_dir": str(index_dir)}


def ceiling(retriever, queries: list[str], topk: int, batch: int = 512) -> float:
    """In-process ``batch_search`` throughput (queries/s) in batches of ``batch``."""
    retriever.batch_search(queries[:batch], topk)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        retriever.batch_search(queries[i : i + batch], topk)
    return len(queries) / (time.perf_counter() - start)


def reference_app(retriever):
    """The latency reference: a plain synchronous FastAPI handler calling the backend's ``batch_search`` itself (no
    batcher, cache or validation), with the same response shape and JSON writer as ``retriever_server.app``, so the
    difference at one client is what the batching path costs."""
    from fastapi import FastAPI, Response

    app = FastAPI()

    @app.post("/retrieve")
    def retrieve(body: dict) -> Response:
        docs, scores = retriever.batch_search(body["queries"], body["topk"], return_scores=True)
        result = [[{"document": d, "score": s} for d, s in zip(ds, ss)] for ds, ss in zip(docs, scores)]
        return Response(content=orjson.dumps({"result": result}), media_type="application/json")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    return app


def serve_reference(backend: str, corpus: str, index_dir: str, port: int, options: dict) -> None:
    import uvicorn

    retriever = BACKENDS[backend].open(corpus, index_dir, **options)
    uvicorn.run(reference_app(retriever), host="127.0.0.1", port=port, log_level="warning")


def start_server(backend: str, corpus: Path, index_dir: str, port: int, mode: str, overrides: list[str],
                 options: dict | None = None) -> subprocess.Popen:
    """Our server (``recipes/serve_retriever.py``), or with ``mode="reference"`` the plain handler, in a child."""
    if mode == "reference":
        cmd = [sys.executable, __file__, "--serve-reference", backend, str(corpus), index_dir, str(port),
               *(f"--option={k}={v}" for k, v in (options or {}).items())]
    else:
        cmd = [sys.executable, str(ROOT / "recipes" / "serve_retriever.py"), f"retriever={backend}",
               f"corpus_path={corpus}", f"index_dir={index_dir}", f"server.port={port}", f"server.mode={mode}",
               "app.max_batch_queries=512", f"hydra.run.dir={corpus.parent / 'hydra'}", *overrides]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not become healthy in 600 s")


async def load(url: str, queries: list[str], clients: int, requests_per_client: int, per_request: int,
               topk: int, coalesce_ms: float, offset: int = 0) -> dict:
    """``clients`` concurrent clients, each sending ``requests_per_client`` requests in a row (queries from
    ``offset`` on)."""
    latencies: list[float] = []
    errors = 0

    async def one(client_id: int, client: RetrieverClient) -> None:
        nonlocal errors
        for j in range(requests_per_client):
            start_at = offset + (client_id * requests_per_client + j) * per_request
            batch = [queries[(start_at + k) % len(queries)] for k in range(per_request)]
            start = time.perf_counter()
            try:
                await client.search(batch, topk)
                latencies.append((time.perf_counter() - start) * 1000)
            except RetrieverError:
                errors += 1

    async with RetrieverClient(url, timeout_s=60, max_retries=0, max_connections=max(64, clients),
                               coalesce_ms=coalesce_ms) as client:
        await client.search(queries[:per_request], topk)  # warm-up: open a connection before the clock starts
        start = time.perf_counter()
        await asyncio.gather(*(one(i, client) for i in range(clients)))
        wall = time.perf_counter() - start
    return latency_row(latencies, wall, clients, per_request, errors)


def latency_row(latencies: list[float], wall: float, clients: int, per_request: int, errors: int) -> dict:
    """Throughput and latency percentiles of one load; ``latencies_ms`` keeps the samples, for pooling rounds."""
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"clients": clients, "requests": len(ordered) + errors, "queries_per_request": per_request,
            "queries_per_s": round(len(ordered) * per_request / wall, 1), "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2), "p99_over_p50": round(p99 / p50, 2), "errors": errors, "wall_s": wall,
            "latencies_ms": ordered}


def pooled(rows: list[dict]) -> dict:
    """One row from several rounds of the same load: their samples, walls and errors together."""
    return latency_row([x for r in rows for x in r["latencies_ms"]], sum(r["wall_s"] for r in rows),
                       rows[0]["clients"], rows[0]["queries_per_request"], sum(r["errors"] for r in rows))


def summarise(report: dict) -> dict:
    """The issue's keys: ``<backend>_pct_ceiling_64``, ``single_client_latency_ratio`` (the worst backend's p50 at
    one client over the plain handler's) and whether each target holds."""
    keys, met = {}, []
    for b in report["backends"]:
        by_clients = {row["clients"]: row for row in b["load"]}
        b["single_client_latency_ratio"] = round(by_clients[1]["p50_ms"] / b["reference"]["p50_ms"], 3)
        keys[f"{b['backend']}_pct_ceiling_64"] = by_clients[64]["pct_of_ceiling"] if 64 in by_clients else None
        row = by_clients.get(64)  # not measured: not met
        met.append(row is not None and row["pct_of_ceiling"] >= 70 and row["p99_over_p50"] < 10
                   and row["errors"] == 0)
        met.append(b["single_client_latency_ratio"] <= 1.1)
    keys["single_client_latency_ratio"] = max(b["single_client_latency_ratio"] for b in report["backends"])
    return keys | {"targets_met": all(met)}


def markdown(report: dict) -> str:
    lines = [f"# Retriever benchmark ({report['passages']} passages, topk {report['topk']}, "
             f"{report['queries_per_request']} query/call, client coalescing {report['client_coalesce_ms']} ms, "
             f"server mode {report['mode']}, options {report['options'] or 'default'}, "
             f"server overrides {report['server_overrides'] or 'none'})", "",
             f"Commit `{report.get('commit')}`; command: `{report.get('command')}`.", "",
             "| backend | server | index build s | server RSS MB | ceiling q/s | clients | q/s | % of ceiling | p50 ms "
             "| p99 ms | p99/p50 | errors |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in report["backends"]:
        for server, row in [("plain handler", b["reference"])] + [("ours", row) for row in b["load"]]:
            lines.append(f"| {b['backend']} | {server} | {b['build_seconds']} | {b['server_rss_mb']} | "
                         f"{b['ceiling_qps']} | {row['clients']} | {row['queries_per_s']} | {row['pct_of_ceiling']} | "
                         f"{row['p50_ms']} | {row['p99_ms']} | {row['p99_over_p50']} | {row['errors']} |")
    lines += ["", "| backend | % of ceiling at 64 clients | p50 at 1 client / plain handler's |", "|---|---|---|"]
    lines += [f"| {b['backend']} | {report.get(b['backend'] + '_pct_ceiling_64')} | "
              f"{b.get('single_client_latency_ratio')} |" for b in report["backends"]]
    lines += ["", f"Machine: {os.cpu_count()} CPUs; load generator and server share them. Targets: >= 70% of the "
              "ceiling at 64 clients, p99 < 10x p50, 0 errors; p50 at 1 client <= 1.1x the plain synchronous "
              "handler's (same backend, index and JSON writer, no batcher). "
              f"All targets met: {report.get('targets_met')}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/bench/retriever")
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--backends", default="bm25,dense")
    parser.add_argument("--concurrency", default="1,16,64", help="client counts (must include 1)")
    parser.add_argument("--requests-per-client", type=int, default=0,
                        help="default: enough for ~1000 requests per concurrency level (at least 20 each)")
    parser.add_argument("--queries-per-request", type=int, default=1)
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--mode", choices=["uvicorn", "ray"], default="uvicorn")
    parser.add_argument("--coalesce-ms", type=float, default=2.0,
                        help="client-side coalescing window shared by the concurrent clients (default: the "
                             "rollout's, coa.retriever.coalesce_ms; 0: off)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a backend option for both the in-process and the served retriever, e.g. "
                             "faiss_type=HNSW32 (repeatable)")
    parser.add_argument("--server-override", action="append", default=[],
                        help="a Hydra override for the server, e.g. app.batch_wait_ms=10 (repeatable)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating rounds of the lone-client load against the plain handler and the server")
    parser.add_argument("--serve-reference", nargs=4, metavar=("BACKEND", "CORPUS", "INDEX_DIR", "PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    options = dict(option.split("=", 1) for option in args.option)
    if args.serve_reference:
        backend, corpus, index_dir, port = args.serve_reference
        return serve_reference(backend, corpus, index_dir, int(port), options)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    if 1 not in concurrency:
        parser.error("--concurrency must include 1 (the lone client's latency against the plain handler)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus, queries = world(out, args.passages)
    report = {"passages": sum(1 for _ in open(corpus)), "topk": args.topk, "mode": args.mode,
              "client_coalesce_ms": args.coalesce_ms, "server_overrides": args.server_override,
              "queries_per_request": args.queries_per_request, "options": options, "backends": []}
    overrides = args.server_override + [f"retriever.options.{k}={v}" for k, v in options.items()]

    def run_load(url: str, clients: int) -> dict:
        per_client = args.requests_per_client or max(20, 1000 // clients)
        return asyncio.run(load(url, queries, clients, per_client, args.queries_per_request, args.topk,
                                args.coalesce_ms))

    def public(row: dict, ceiling_qps: float) -> dict:
        return {k: v for k, v in row.items() if k not in ("latencies_ms", "wall_s")} | {
            "pct_of_ceiling": round(100 * row["queries_per_s"] / ceiling_qps, 1)}

    for backend in args.backends.split(","):
        retriever, manifest = index(backend, corpus, out, options)
        ceiling_qps = ceiling(retriever, queries, args.topk)
        del retriever
        ports = {mode: free_port() for mode in ["reference", args.mode]}
        servers = [start_server(backend, corpus, manifest["index_dir"], port, mode, overrides, options)
                   for mode, port in ports.items()]
        urls = {mode: f"http://127.0.0.1:{port}" for mode, port in ports.items()}
        try:
            # the lone client against both servers, in alternating rounds: drift on a shared machine hits both alike
            per_round = max(20, (args.requests_per_client or 1000) // args.rounds)
            lone = {mode: [] for mode in urls}
            for i in range(args.rounds):
                for mode, url in urls.items():
                    lone[mode].append(asyncio.run(load(url, queries, 1, per_round, args.queries_per_request,
                                                       args.topk, args.coalesce_ms, offset=i * per_round)))
            reference = public(pooled(lone["reference"]), ceiling_qps)
            rows = [public(pooled(lone[args.mode]), ceiling_qps)] + [
                public(run_load(urls[args.mode], clients), ceiling_qps) for clients in concurrency if clients != 1]
            for row in [reference, *rows]:
                print(backend, row, flush=True)
            stats = httpx.get(f"{urls[args.mode]}/stats", timeout=10).json()
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=60)
        report["backends"].append({"backend": backend, "build_seconds": manifest["build_seconds"],
                                   "ceiling_qps": round(ceiling_qps, 1), "server_rss_mb": stats["memory_rss_mb"],
                                   "server_stats": stats, "reference": reference, "load": rows})
    report |= summarise(report) | provenance("retriever_bench.py", argv)
    write_report(out, "report", report, markdown(report))


if __name__ == "__main__":
    main()

"""Retriever benchmark: throughput and latency through the HTTP server at several client concurrencies, beside the
in-process ``batch_search`` ceiling measured in the same run, on a toy world of >= 100k passages.

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autocoa_verl.agent.retriever_client import RetrieverClient, RetrieverError  # noqa: E402
from autocoa_verl.data.toy_world import ToyWorldConfig, build_toy_world  # noqa: E402
from retriever_server.base import IndexMismatchError  # noqa: E402
from retriever_server.bm25 import BM25Retriever  # noqa: E402
from retriever_server.dense import DenseRetriever  # noqa: E402
from retriever_server.serve import free_port  # noqa: E402

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


def start_server(backend: str, corpus: Path, index_dir: str, port: int, mode: str,
                 overrides: list[str]) -> subprocess.Popen:
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
               topk: int, coalesce_ms: float) -> dict:
    """``clients`` concurrent clients, each sending ``requests_per_client`` requests in a row."""
    latencies: list[float] = []
    errors = 0

    async def one(client_id: int, client: RetrieverClient) -> None:
        nonlocal errors
        for j in range(requests_per_client):
            offset = (client_id * requests_per_client + j) * per_request
            batch = [queries[(offset + k) % len(queries)] for k in range(per_request)]
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
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return {"clients": clients, "requests": clients * requests_per_client, "queries_per_request": per_request,
            "queries_per_s": round(len(latencies) * per_request / wall, 1), "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2), "p99_over_p50": round(p99 / p50, 2), "errors": errors}


def markdown(report: dict) -> str:
    lines = [f"# Retriever benchmark ({report['passages']} passages, topk {report['topk']}, "
             f"{report['queries_per_request']} query/call, client coalescing {report['client_coalesce_ms']} ms, "
             f"server mode {report['mode']}, options {report['options'] or 'default'}, "
             f"server overrides {report['server_overrides'] or 'none'})", "",
             "| backend | index build s | server RSS MB | ceiling q/s | clients | q/s | % of ceiling | p50 ms | p99 ms "
             "| p99/p50 | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in report["backends"]:
        for row in b["load"]:
            lines.append(f"| {b['backend']} | {b['build_seconds']} | {b['server_rss_mb']} | {b['ceiling_qps']} | "
                         f"{row['clients']} | {row['queries_per_s']} | {row['pct_of_ceiling']} | {row['p50_ms']} | "
                         f"{row['p99_ms']} | {row['p99_over_p50']} | {row['errors']} |")
    lines += ["", f"Machine: {os.cpu_count()} CPUs; load generator and server share them. Target: >= 70% of the "
              "ceiling at 64 clients, p99 < 10x p50, 0 errors."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/bench/retriever")
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--backends", default="bm25,dense")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--requests-per-client", type=int, default=0,
                        help="default: enough for ~1000 requests per concurrency level (at least 20 each)")
    parser.add_argument("--queries-per-request", type=int, default=1)
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--mode", choices=["uvicorn", "ray"], default="uvicorn")
    parser.add_argument("--coalesce-ms", type=float, default=0.0,
                        help="client-side coalescing window shared by the concurrent clients (0: off)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a backend option for both the in-process and the served retriever, e.g. "
                             "faiss_type=HNSW32 (repeatable)")
    parser.add_argument("--server-override", action="append", default=[],
                        help="a Hydra override for the server, e.g. app.batch_wait_ms=10 (repeatable)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus, queries = world(out, args.passages)
    report = {"passages": sum(1 for _ in open(corpus)), "topk": args.topk, "mode": args.mode,
              "client_coalesce_ms": args.coalesce_ms,
              "server_overrides": args.server_override,
              "queries_per_request": args.queries_per_request, "backends": []}
    options = dict(option.split("=", 1) for option in args.option)
    overrides = args.server_override + [f"retriever.options.{k}={v}" for k, v in options.items()]
    report["options"] = options
    for backend in args.backends.split(","):
        retriever, manifest = index(backend, corpus, out, options)
        ceiling_qps = ceiling(retriever, queries, args.topk)
        del retriever
        port = free_port()
        server = start_server(backend, corpus, manifest["index_dir"], port, args.mode, overrides)
        url = f"http://127.0.0.1:{port}"
        try:
            rows = []
            for clients in map(int, args.concurrency.split(",")):
                per_client = args.requests_per_client or max(20, 1000 // clients)
                row = asyncio.run(load(url, queries, clients, per_client, args.queries_per_request, args.topk,
                                       args.coalesce_ms))
                row["pct_of_ceiling"] = round(100 * row["queries_per_s"] / ceiling_qps, 1)
                rows.append(row)
                print(backend, row, flush=True)
            stats = httpx.get(f"{url}/stats", timeout=10).json()
        finally:
            server.terminate()
            server.wait(timeout=60)
        report["backends"].append({"backend": backend, "build_seconds": manifest["build_seconds"],
                                   "ceiling_qps": round(ceiling_qps, 1), "server_rss_mb": stats["memory_rss_mb"],
                                   "server_stats": stats, "load": rows})
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

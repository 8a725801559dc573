"""The Ray Serve deployment, for real: a local Ray, two replicas, HTTP on loopback, the async client."""

import asyncio
import tempfile

import httpx
import pytest

from autocoa_verl.agent.retriever_client import RetrieverClient
from autocoa_verl.config import compose
from retriever_server.serve import serve_ray
from retriever_server.serve import free_port

pytestmark = pytest.mark.e2e  # a local Ray cluster and Ray Serve


@pytest.fixture
def local_ray(monkeypatch):
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def test_ray_serve_two_replicas_answer_the_contract(local_ray, toy_world_dir, bm25_index, bm25):
    port = free_port()
    cfg = compose("retriever_server", [
        f"corpus_path={toy_world_dir / 'corpus.jsonl'}", f"index_dir={bm25_index}", f"server.port={port}",
        "server.replicas=2", "server.num_cpus_per_replica=0.5",
        "retriever.options.engine=numpy"])  # deployment is under test here; numba's JIT would cost each replica
    url = serve_ray(cfg, block=False)
    assert url == f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/health", timeout=10).json()["documents"] == len(bm25.corpus)

    async def run():
        async with RetrieverClient(url, topk=2, timeout_s=30) as client:
            return await asyncio.gather(*(client.search([f"q{i} founder", "region"]) for i in range(16)))

    results = asyncio.run(run())
    # scores, not ids: equal-score ties may be ordered differently by the numpy and numba engines
    _, expected = bm25.batch_search(["region"], 2, return_scores=True)
    assert all([p.score for p in r[1]] == pytest.approx(expected[0]) for r in results)
    from ray import serve

    assert serve.status().applications["retriever"].deployments["retriever"].replica_states.get("RUNNING") == 2


def test_deploys_into_an_existing_ray_cluster(toy_world_dir, bm25_index, monkeypatch, capsys):
    """Ops' path: a cluster is already running (`ray start --head`); the server joins it by address, and a second
    launch (another RL job) reuses the running application. The head runs with --block so that stopping it stops only
    this cluster, not other Ray processes on the machine."""
    import os
    import subprocess
    import time

    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    gcs_port, http_port = free_port(), free_port()
    ray_bin = os.path.join(os.path.dirname(os.sys.executable), "ray")
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={gcs_port}", "--num-cpus=2",
                             f"--temp-dir={tempfile.mkdtemp(prefix='rayc', dir='/tmp')}", "--include-dashboard=false",
                             "--disable-usage-stats"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cfg = compose("retriever_server", [
            f"corpus_path={toy_world_dir / 'corpus.jsonl'}", f"index_dir={bm25_index}", f"server.port={http_port}",
            f"server.ray_address=127.0.0.1:{gcs_port}", "server.num_cpus_per_replica=0.5",
            "retriever.options.engine=numpy"])
        deadline = time.time() + 120
        while True:  # the head takes a few seconds to accept drivers
            try:
                ray.init(address=cfg.server.ray_address)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        assert ray.get_runtime_context().gcs_address.endswith(str(gcs_port))
        url = serve_ray(cfg, block=False)
        body = httpx.post(f"{url}/retrieve", json={"query": "founder"}, timeout=30).json()
        assert len(body["result"][0]) == 3
        cfg.server.replicas = 2  # a second launch asking for more: shares the running one, redeploys nothing
        assert serve_ray(cfg, block=False) == url
        assert "reusing the running Serve application 'retriever'" in capsys.readouterr().out
        from ray import serve

        assert serve.status().applications["retriever"].deployments["retriever"].replica_states.get("RUNNING") == 1
    finally:
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        head.terminate()
        head.wait(timeout=120)

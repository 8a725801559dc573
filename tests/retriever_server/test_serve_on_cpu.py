"""The Ray Serve deployment, for real: a local Ray, two replicas, HTTP on loopback, the async client."""

import asyncio
import tempfile

import httpx
import pytest
from hydra import compose, initialize_config_dir

from autocoa_verl.agent.retriever_client import RetrieverClient
from retriever_server.serve import serve_ray
from tests.loopback import free_port
from tests.test_hydra_configs_on_cpu import CONFIG_DIR


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
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("retriever_server", overrides=[
            f"corpus_path={toy_world_dir / 'corpus.jsonl'}", f"index_dir={bm25_index}", f"server.port={port}",
            "server.replicas=2", "server.num_cpus_per_replica=0.5"])
    url = serve_ray(cfg, block=False)
    assert url == f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/health", timeout=10).json()["documents"] == len(bm25.corpus)

    async def run():
        async with RetrieverClient(url, topk=2, timeout_s=30) as client:
            return await asyncio.gather(*(client.search([f"q{i} founder", "region"]) for i in range(16)))

    results = asyncio.run(run())
    expected = bm25.batch_search(["region"], 2)
    assert all([p.id for p in r[1]] == [d["id"] for d in expected[0]] for r in results)
    from ray import serve

    assert serve.status().applications["retriever"].deployments["retriever"].replica_states.get("RUNNING") == 2

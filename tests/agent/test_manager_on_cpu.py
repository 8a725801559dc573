"""The legacy-trainer worker and manager: the step reaches the loop, verl pads our outputs, metrics aggregate."""

import asyncio

import numpy as np
import pytest
from verl.protocol import DataProto

from autocoa_verl.agent.manager import CoAAgentLoopManager, CoAAgentLoopWorker, aggregate_coa_metrics
from autocoa_verl.agent.observers import close_shared_clients
from autocoa_verl.agent.standalone import compose_rl_config
from autocoa_verl.config import config_dir
from autocoa_verl.protocol import build_prompt
from tests.agent.fakes import ScriptedServer


@pytest.fixture
def in_project_root(monkeypatch):
    monkeypatch.chdir(config_dir().parent)  # verl resolves agent_loop_config_path against the working directory


def test_worker_passes_the_step_to_the_schedule_and_verl_pads_the_masks(tiny_model_dir, tiny_tokenizer, bm25_server,
                                                                         in_project_root):
    config = compose_rl_config([f"actor_rollout_ref.model.path={tiny_model_dir}",
                                "actor_rollout_ref.rollout.prompt_length=256",
                                "actor_rollout_ref.rollout.response_length=128",
                                "actor_rollout_ref.rollout.calculate_log_probs=true",
                                f"coa.retriever.url={bm25_server.url}",
                                "coa.schedule.kind=ratio", "coa.schedule.simulated_per_real=5"])
    server = ScriptedServer(tiny_tokenizer, ["<search>Quessly</search>", "<answer>a</answer>"], per_sample=True)
    worker = CoAAgentLoopWorker(config, server)
    prompts = np.empty(2, dtype=object)
    prompts[:] = [build_prompt("Who founded Quessly?"), build_prompt("Who founded Quessly?")]
    batch = DataProto.from_dict(non_tensors={"raw_prompt": prompts}, meta_info={"global_steps": 6})

    async def generate():
        try:
            return await worker.generate_sequences(batch)
        finally:
            await close_shared_clients()

    output = asyncio.run(generate())

    assert list(output.non_tensor_batch["coa_source"]) == ["real", "real"]  # step 6 of 5:1 is the real one
    mask, responses = output.batch["response_mask"], output.batch["responses"]
    assert mask.shape == (2, 128)
    for row in range(2):
        n = int(output.batch["attention_mask"][row, 256:].sum())
        ids, m = responses[row, :n].tolist(), mask[row, :n].tolist()
        obs = [t for t, k in zip(ids, m) if k == 0]
        assert tiny_tokenizer.decode(obs).startswith("\n<information>")
        assert tiny_tokenizer.decode([t for t, k in zip(ids, m) if k == 1]).endswith("</answer>")
        assert mask[row, n:].sum() == 0
        # log-probs are zero exactly where the mask is zero
        lps = output.batch["rollout_log_probs"][row, :n]
        assert all((lp == 0) == (k == 0) for lp, k in zip(lps.tolist(), m))
    metrics = aggregate_coa_metrics(output.non_tensor_batch["coa_metrics"])
    assert metrics["coa/obs_real/total"] == 2 and metrics["coa/searches/mean"] == 1
    assert 0 < metrics["coa/generated_token_share"] < 1


def test_aggregate_metrics_by_hand():
    rows = [{"searches": 2, "obs_real": 1, "obs_simulated": 1, "env_latency_s": 0.3, "generated_tokens": 30,
             "observation_tokens": 10},
            {"searches": 0, "obs_real": 0, "obs_simulated": 0, "env_latency_s": 0.0, "generated_tokens": 10,
             "observation_tokens": 0}]
    m = aggregate_coa_metrics(rows)
    assert m["coa/searches/mean"] == 1 and m["coa/searches/max"] == 2 and m["coa/searches/total"] == 2
    assert m["coa/env_latency_s/per_observation"] == pytest.approx(0.15)
    assert m["coa/generated_token_share"] == pytest.approx(40 / 50)
    assert aggregate_coa_metrics([]) == {}


def test_manager_uses_our_worker():
    manager = CoAAgentLoopManager.__new__(CoAAgentLoopManager)
    CoAAgentLoopManager.__init__(manager, compose_rl_config([]), llm_client=None)
    assert manager.agent_loop_workers_class.__ray_actor_class__ is CoAAgentLoopWorker

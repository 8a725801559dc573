"""The legacy-trainer worker and manager: the step reaches the loop, verl pads our outputs, metrics aggregate."""

import asyncio
import json

import numpy as np
import pytest
from verl.protocol import DataProto

from autocoa_verl.agent.manager import (CoAAgentLoopManager, CoAAgentLoopWorker, aggregate_coa_metrics, cost_report,
                                       step_costs)
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


def test_step_costs_and_their_report_on_a_scripted_step():
    rows = [{"obs_real": 2, "real_latency_s": 0.1, "fidelity_real_calls": 0},
            {"obs_simulated": 3, "simulated_tokens": 120, "simulated_latency_s": 9.0, "fidelity_real_calls": 1,
             "fidelity_real_latency_s": 0.05, "fidelity_probe_tokens": 0}]
    costs = step_costs(rows)
    assert costs == {"real_calls": 3.0, "simulated_observations": 3.0, "simulated_tokens": 120.0,
                     "simulated_gen_s": 9.0, "real_latency_s": pytest.approx(0.15), "fidelity_real_calls": 1.0,
                     "probe_tokens": 0.0}
    report = cost_report(costs, cost_per_call=0.5, prefix="coa/cost")
    # 3 real calls (0.15 s in all) spent 1.5; 3 simulated observations would have been 3 calls (1.5) of 0.05 s each
    assert report["coa/cost/spent"] == 1.5 and report["coa/cost/saved"] == 1.5
    assert report["coa/cost/time_saved_s"] == pytest.approx(3 * 0.05 - 9.0)


def test_aggregate_fidelity_is_a_mean_over_the_checked_observations():
    rows = [{"fidelity_checked": 2, "fidelity_answer_bearing": 1, "fidelity_token_f1": 1.2, "fidelity_rouge_l": 1.0,
             "fidelity_titles": 4, "fidelity_hallucinated_titles": 1},
            {"fidelity_checked": 0}, {"fidelity_checked": 1, "fidelity_answer_bearing": 1, "fidelity_token_f1": 0.3,
                                      "fidelity_rouge_l": 0.2, "fidelity_titles": 0, "fidelity_hallucinated_titles": 0}]
    m = aggregate_coa_metrics(rows)
    assert m["coa/fidelity/checked"] == 3 and m["coa/fidelity/answer_bearing"] == pytest.approx(2 / 3)
    assert m["coa/fidelity/token_f1"] == pytest.approx(0.5) and m["coa/fidelity/rouge_l"] == pytest.approx(0.4)
    assert m["coa/fidelity/hallucinated_title_share"] == pytest.approx(0.25)
    assert "coa/fidelity/checked" not in aggregate_coa_metrics([{"fidelity_checked": 0, "searches": 1}])


def _gated_run(monkeypatch, tmp_path, fidelity_by_step, steps, cost_per_call=0.0, overrides=()):
    """Drives the manager's step loop with verl's dispatch faked: each step's samples report the scripted fidelity
    (and one real or simulated observation, by the step's source). Returns (sources, timing per step, manager)."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopManager

    async def dispatch(self, prompts):
        simulated = prompts.meta_info.get("coa_source") == "simulated"
        calibrating.append(prompts.meta_info.get("coa_fidelity_sample"))
        row = {"obs_simulated" if simulated else "obs_real": 1, "fidelity_checked": 1,
               "fidelity_answer_bearing": fidelity_by_step.get(prompts.meta_info["global_steps"], 1.0),
               "simulated_latency_s": 2.0 * simulated, "real_latency_s": 0.0 if simulated else 0.02}
        out = DataProto.from_dict(non_tensors={"coa_metrics": np.array([row, row], dtype=object)})
        out.meta_info = {"timing": self._performance_metrics([], out)}
        return out

    monkeypatch.setattr(AgentLoopManager, "generate_sequences", dispatch)
    monkeypatch.setattr(AgentLoopManager, "_performance_metrics", lambda self, metrics, output: {})
    config = compose_rl_config(["coa.schedule.kind=fidelity", "coa.schedule.fidelity_window=1",
                                "coa.schedule.fidelity_min_checks=2",
                                "coa.schedule.max_simulated_share=0.6", f"trainer.default_local_dir={tmp_path}",
                                f"coa.retriever.cost_per_call={cost_per_call}", *overrides])
    manager = CoAAgentLoopManager.__new__(CoAAgentLoopManager)
    CoAAgentLoopManager.__init__(manager, config, llm_client=None)
    sources, timings, calibrating = [], [], []
    for step in steps:
        output = manager.generate_sequences(DataProto.from_dict(non_tensors={"raw_prompt": np.empty(2, dtype=object)},
                                                                meta_info={"global_steps": step}))
        sources.append("s" if output.meta_info["timing"]["coa/schedule/simulated"] else "R")
        timings.append(output.meta_info["timing"])
    manager.calibrating = calibrating  # the check share each step's samples were given (None: the configured one)
    return "".join(sources), timings, manager


def test_without_evidence_a_calibration_step_simulates_and_checks_more(monkeypatch, tmp_path):
    # one check per sample, two samples: a step yields 2 checks; the gate needs 4 in its window of one step
    overrides = ["coa.schedule.fidelity_min_checks=4", "coa.schedule.max_simulated_share=1.0",
                 "coa.schedule.calibration_sample=0.5"]
    fidelity = dict(enumerate([0.9, 0.9, 0.2, 0.9], start=1))
    sources, timings, manager = _gated_run(monkeypatch, tmp_path, fidelity, range(1, 5), overrides=overrides)
    # every step is short of evidence (2 < 4): each is a calibration step, simulated, whatever the fidelity
    assert sources == "ssss" and manager.calibrating == [0.5] * 4
    assert [t["coa/schedule/calibrating"] for t in timings] == [1.0] * 4
    assert all(h["calibrating"] for h in json.loads((tmp_path / "coa_ledger.json").read_text())["history"])
    # with enough evidence per step, the gate decides on fidelity alone: step 4 goes real after step 3's drop
    sources, timings, manager = _gated_run(monkeypatch, tmp_path / "b", fidelity, range(1, 5),
                                           overrides=[*overrides, "coa.schedule.fidelity_min_checks=2"])
    assert sources == "sssR" and manager.calibrating == [0.5, None, None, None]
    assert [t["coa/schedule/calibrating"] for t in timings] == [1.0, 0.0, 0.0, 0.0]


def test_the_fidelity_gate_decides_each_step_and_a_resume_decides_the_same(monkeypatch, tmp_path):
    fidelity = dict(enumerate([0.9, 0.8, 0.9, 0.2, 0.7, 0.9, 0.9], start=1))
    sources, timings, manager = _gated_run(monkeypatch, tmp_path, fidelity, range(1, 8), cost_per_call=0.01)
    assert sources == "RsRsRss"  # step 3: the simulated-share cap (0.6); step 5: the drop to 0.2 at step 4
    ledger = json.loads((tmp_path / "coa_ledger.json").read_text())["history"]
    assert [h["step"] for h in ledger] == list(range(1, 8)) and ledger[3]["fidelity"] == 0.2
    assert {h["fidelity_checked"] for h in ledger} == {2}  # two samples, one check each
    last = timings[-1]
    # 3 real steps x 2 calls; 4 simulated steps x 2 observations, each would have cost 0.01 and 0.02 s
    assert last["coa/run_cost/real_calls"] == 6 and last["coa/run_cost/simulated_observations"] == 8
    assert last["coa/run_cost/spent"] == pytest.approx(0.06) and last["coa/run_cost/saved"] == pytest.approx(0.08)
    assert last["coa/run_cost/time_saved_s"] == pytest.approx(8 * 0.02 - 8 * 2.0)
    # a run resumed from the step-3 checkpoint runs steps 4.. again: the same decisions, the later records replaced
    resumed, _, _ = _gated_run(monkeypatch, tmp_path, fidelity, range(4, 8))
    assert resumed == sources[3:]
    assert [h["step"] for h in json.loads((tmp_path / "coa_ledger.json").read_text())["history"]] == list(range(1, 8))
    # validation rollouts are neither decided nor recorded
    validation = DataProto.from_dict(non_tensors={"raw_prompt": np.empty(2, dtype=object)},
                                     meta_info={"global_steps": 8, "validate": True})
    assert "coa/schedule/simulated" not in manager.generate_sequences(validation).meta_info["timing"]
    assert "coa_source" not in validation.meta_info and len(manager.ledger.history) == 7

"""Real verl GRPO steps on the CPU platform through recipes/rl.py: a vLLM-CPU rollout of the CoA loop, FSDP2 updates,
weight sync, checkpoints with HF exports, for both stages (simulated and real observations) and across a resume."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from autocoa_verl.rl_logs import parse_step_metrics

pytestmark = pytest.mark.e2e  # real GRPO runs (Ray, vLLM-CPU, FSDP): minutes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, taught, toy_world_dir):
    """The tiny model taught to search for one question (so rollouts act), and 8 rows of that question (4 batches:
    the resumed run still has data left after step 2)."""
    model, _, question = taught
    rows = pd.read_parquet(toy_world_dir / "test.parquet")  # the taught question's split
    row = rows[rows.extra_info.map(lambda e: e["id"]) == question["id"]]
    data = tmp_path_factory.mktemp("rl_data") / "train.parquet"
    pd.concat([row] * 8, ignore_index=True).to_parquet(data)
    return model, data


def run_rl(config: str, model: Path, data: Path, out: Path, steps: int, *overrides: str) -> str:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("VERL_PLATFORM", None)  # the recipe must select the platform from +platform=rl_cpu alone
    cmd = [sys.executable, str(ROOT / "recipes" / "rl.py"), "--config-name", config, "+platform=rl_cpu",
           f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
           "data.train_batch_size=2", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
           "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "data.max_response_length=384",
           "actor_rollout_ref.actor.optim.lr=1e-4", f"trainer.total_training_steps={steps}", f"trainer.save_freq={steps}",
           "trainer.test_freq=-1", f"trainer.default_local_dir={out}", f"hydra.run.dir={out / 'hydra'}", *overrides]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    return log


def changed_tensors(before: Path, after: Path) -> list[str]:
    a, b = load_file(before / "model.safetensors"), load_file(after / "model.safetensors")
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k].float(), b[k].float())]


def assert_step_used(metrics: dict[str, float], source: str) -> None:
    other = {"real": "simulated", "simulated": "real"}[source]
    assert metrics[f"timing_s/coa/obs_{source}/total"] > 0, metrics
    assert metrics[f"timing_s/coa/obs_{other}/total"] == 0, metrics


@pytest.fixture(scope="module")
def stage1_run(setup, tmp_path_factory):
    model, data = setup
    out = tmp_path_factory.mktemp("rl_stage1")
    return out, run_rl("rl_stage1", model, data, out, 2)


def test_rl_stage1_trains_on_simulated_observations(setup, stage1_run):
    model, _ = setup
    out, log = stage1_run
    steps = parse_step_metrics(log)
    assert sorted(steps) == [1, 2], log[-3000:]
    for metrics in steps.values():
        assert_step_used(metrics, "simulated")
        # logged every step: reward, EM, actions per sample, environment latency, the update
        for key in ("critic/score/mean", "timing_s/coa/searches/mean", "timing_s/coa/env_latency_s/mean",
                    "timing_s/gen", "timing_s/update_actor", "actor/pg_loss"):
            assert key in metrics, key
    exported = out / "global_step_2" / "actor" / "huggingface"
    assert len(changed_tensors(model, exported)) >= 10  # the policy moved, and the export has it


def test_rl_stage2_trains_on_the_real_retriever(setup, bm25_server, tmp_path):
    model, data = setup
    log = run_rl("rl_stage2", model, data, tmp_path, 2, f"coa.retriever.url={bm25_server.url}")
    steps = parse_step_metrics(log)
    assert sorted(steps) == [1, 2]
    for metrics in steps.values():
        assert_step_used(metrics, "real")
        assert metrics["timing_s/coa/retriever_failures/total"] == 0
    # the taught answer, after the real observation it was taught with, earns the reward: the reward manager is wired
    assert max(m["critic/score/max"] for m in steps.values()) == 1.0
    assert len(changed_tensors(model, tmp_path / "global_step_2" / "actor" / "huggingface")) >= 10


def test_the_schedule_continues_across_a_resume(setup, stage1_run, bm25_server):
    """Steps 1-2 ran simulated (stage 1's checkpoint); resumed under a 2:1 schedule, step 3 must be the real one."""
    model, data = setup
    out, _ = stage1_run
    log = run_rl("rl_mixed", model, data, out, 3, "coa.schedule.simulated_per_real=2",
                 f"coa.retriever.url={bm25_server.url}")
    steps = parse_step_metrics(log)
    assert sorted(steps) == [3], log[-3000:]  # resumed: only step 3 ran
    assert_step_used(steps[3], "real")

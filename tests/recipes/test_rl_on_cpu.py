"""Real verl GRPO steps on the CPU platform through recipes/rl.py: a vLLM-CPU rollout of the CoA loop, FSDP2 updates,
weight sync, checkpoints with HF exports, for both stages (simulated and real observations) and across a resume.
Stage 2 runs as the README's cluster section says: Ray jobs submitted by recipes/launch_rl.py to a local Ray cluster,
with the retriever deployed as a Ray Serve application there."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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


ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
       # a Ray job's `python` is the one on the cluster's PATH: this venv's, as on a cluster whose nodes activated it
       "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
ENV.pop("VERL_PLATFORM", None)  # the recipe must select the platform from +platform=rl_cpu alone


def rl_overrides(model: Path, data: Path, out: Path, steps: int) -> list[str]:
    return ["+platform=rl_cpu", f"actor_rollout_ref.model.path={model}", f"data.train_files={data}",
            f"data.val_files={data}", "data.train_batch_size=2", "actor_rollout_ref.rollout.n=2",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            "data.max_response_length=384", "actor_rollout_ref.actor.optim.lr=1e-4",
            f"trainer.total_training_steps={steps}", "trainer.save_freq=1", "trainer.test_freq=-1",
            f"trainer.default_local_dir={out}"]


def run_rl(config: str, model: Path, data: Path, out: Path, steps: int, *overrides: str) -> str:
    cmd = [sys.executable, str(ROOT / "recipes" / "rl.py"), "--config-name", config,
           *rl_overrides(model, data, out, steps), f"hydra.run.dir={out / 'hydra'}", *overrides]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900, cwd=ROOT)
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
                    "timing_s/gen", "timing_s/update_actor", "actor/pg_loss",
                    # the KL loss to the reference, as on GPU (the CPU platform unpins the reference's offload)
                    "actor/kl_loss", "timing_s/ref"):
            assert key in metrics, key
    exported = out / "global_step_2" / "actor" / "huggingface"
    assert len(changed_tensors(model, exported)) >= 10  # the policy moved, and the export has it


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head on 127.0.0.1 (``ray start --head --block``: stopping it stops its processes, and no other Ray on the
    machine), with one logical GPU as the CPU overlay declares; yields the job-submission address."""
    from ray.job_submission import JobSubmissionClient

    from retriever_server.serve import free_port

    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    address = f"http://127.0.0.1:{free_port()}"
    log = open(temp / "head.log", "w")
    env = {k: v for k, v in ENV.items() if k != "CUDA_VISIBLE_DEVICES"}  # Ray refuses a GPU count with it empty
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={free_port()}", "--dashboard-host=127.0.0.1", f"--dashboard-port={address.rsplit(':', 1)[1]}",
         "--num-cpus=32", "--num-gpus=1", f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while True:
        try:
            JobSubmissionClient(address).list_jobs()
            break
        except Exception:
            if head.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no Ray head at {address}:\n{(temp / 'head.log').read_text()[-3000:]}")
            time.sleep(2)
    yield address
    os.killpg(head.pid, signal.SIGTERM)  # the head and every process it started (its own session)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


def launch(address: str, job: str, port: int, toy_world_dir: Path, bm25_index: Path, overrides: list[str]) -> str:
    """``recipes/launch_rl.py`` exactly as the README's cluster section runs it; returns the job's log."""
    cmd = [sys.executable, "recipes/launch_rl.py", "--address", address, "--config-name", "rl_stage2",
           "--corpus", str(toy_world_dir / "corpus.jsonl"), "--index-dir", str(bm25_index),
           "--retriever-port", str(port), "--submission-id", job, "--", *overrides]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900, cwd=ROOT)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and f"job {job}: SUCCEEDED" in log, log[-5000:]
    return log


def test_rl_stage2_runs_as_ray_jobs_against_a_retriever_they_deploy(setup, ray_cluster, toy_world_dir, bm25_index,
                                                                     tmp_path):
    """Job 1 deploys the bm25 retriever into the cluster and trains step 1 on its observations; job 2 reuses that
    application and resumes from job 1's checkpoint for step 2."""
    from retriever_server.serve import free_port

    model, data = setup
    port = free_port()
    first = launch(ray_cluster, "stage2-a", port, toy_world_dir, bm25_index, rl_overrides(model, data, tmp_path, 1))
    assert f"retriever (bm25) serving at http://127.0.0.1:{port}" in first
    second = launch(ray_cluster, "stage2-b", port, toy_world_dir, bm25_index, rl_overrides(model, data, tmp_path, 2))
    assert "reusing the running Serve application 'retriever'" in second and "serving at" not in second
    steps = {**parse_step_metrics(first), **parse_step_metrics(second)}
    assert sorted(parse_step_metrics(first)) == [1] and sorted(parse_step_metrics(second)) == [2], second[-3000:]
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
                 f"coa.retriever.url={bm25_server.url}", "coa.world_model.probe_sample=1.0",
                 "coa.retriever.cost_per_call=0.5")
    steps = parse_step_metrics(log)
    assert sorted(steps) == [3], log[-3000:]  # resumed: only step 3 ran
    assert_step_used(steps[3], "real")
    # the step ledger beside the checkpoints carries both runs' steps; the run's costs add up across the resume
    ledger = json.loads((out / "coa_ledger.json").read_text())["history"]
    assert [(h["step"], h["source"]) for h in ledger] == [(1, "simulated"), (2, "simulated"), (3, "real")]
    m = steps[3]
    assert m["timing_s/coa/run_cost/simulated_observations"] == sum(h["simulated_observations"] for h in ledger) > 0
    assert m["timing_s/coa/run_cost/spent"] == 0.5 * m["timing_s/coa/run_cost/real_calls"] > 0
    # the real observations of step 3 were also written by the world model (probes: each one unless its budget was
    # too small for a simulated block), and compared
    assert 0 < m["timing_s/coa/fidelity/checked"] <= m["timing_s/coa/obs_real/total"]
    assert 0 <= m["timing_s/coa/fidelity/rouge_l"] <= 1 and ledger[2]["fidelity"] is not None

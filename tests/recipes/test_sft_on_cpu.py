"""The read stage and the three SFT stages run real verl steps on the CPU platform through recipes/sft.py, each
starting from the previous stage's exported HF checkpoint (read -> 1 -> 2 -> 3)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from autocoa_verl.data.oracle import Observations, write_oracle_parquet
from autocoa_verl.sft.trainer import latest_hf_checkpoint

pytestmark = pytest.mark.e2e  # real SFT runs under torchrun

ROOT = Path(__file__).resolve().parents[2]


def _run_stage(stage: str, data: Path, model: Path, out: Path, tmp_path: Path) -> str:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    env.pop("VERL_PLATFORM", None)  # the recipe must select the platform from +platform=sft_cpu alone
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           str(ROOT / "recipes" / "sft.py"), "--config-name", f"sft_{stage}", "+platform=sft_cpu",
           f"data.train_files={data}", "data.train_batch_size=4", "data.micro_batch_size_per_gpu=4",
           "data.max_length=1024", f"model.path={model}", "trainer.total_training_steps=2",
           f"trainer.default_local_dir={out}", "optim.lr=1e-3", f"hydra.run.dir={tmp_path / f'hydra{stage}'}"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


def _metric(log: str, name: str) -> list[float]:
    return [float(v) for v in re.findall(rf"train/{name}:([-0-9.e]+)", log)]


def _changed(before: Path, after: Path) -> list[str]:
    a, b = load_file(before / "model.safetensors"), load_file(after / "model.safetensors")
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k].float(), b[k].float())]


def test_stages_chain_on_cpu(tmp_path, tiny_model_dir, tiny_tokenizer, toy_world_dir, bm25):
    trajectories, pairs = tmp_path / "traj.parquet", tmp_path / "pairs.parquet"
    write_oracle_parquet(toy_world_dir / "train.jsonl", trajectories, Observations(bm25, tiny_tokenizer),
                         pairs_path=pairs)
    model = tiny_model_dir
    stages = (("read", toy_world_dir / "corpus.jsonl"), ("stage1", pairs), ("stage2", trajectories),
              ("stage3", trajectories))
    for stage, data in stages:
        out = tmp_path / stage
        log = _run_stage(stage, data, model, out, tmp_path)
        losses = _metric(log, "loss")
        assert len(losses) == 2 and all(loss > 0 for loss in losses), (stage, losses)
        if stage == "stage1":  # the contrastive loss's own metrics reach verl's logger
            assert len(_metric(log, "pair_accuracy")) == 2 and len(_metric(log, "margin")) == 2
        exported = latest_hf_checkpoint(out)
        assert exported == out / "global_step_2" / "huggingface"
        changed = _changed(model, exported)
        assert len(changed) >= 10, f"stage {stage}: only {changed} changed"
        model = exported  # the next stage starts here

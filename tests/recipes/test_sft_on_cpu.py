"""verl's own SFT trainer runs real steps on the CPU platform through recipes/sft.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

from autocoa_verl.protocol import build_prompt

ROOT = Path(__file__).resolve().parents[2]


def _sft_parquet(toy_world_dir: Path, out: Path) -> Path:
    rows = [json.loads(line) for line in open(toy_world_dir / "train.jsonl")][:32]
    records = [{"messages": build_prompt(r["question"])
                + [{"role": "assistant", "content": f"<think>I know it.</think><answer>{r['golden_answers'][0]}</answer>"}]}
               for r in rows]
    pd.DataFrame(records).to_parquet(out)
    return out


def test_verl_sft_trainer_two_steps_on_cpu(tmp_path, tiny_model_dir, toy_world_dir):
    data = _sft_parquet(toy_world_dir, tmp_path / "sft.parquet")
    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    env.pop("VERL_PLATFORM", None)  # the recipe must select the platform from +platform=sft_cpu alone
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           str(ROOT / "recipes" / "sft.py"), "+platform=sft_cpu", f"data.train_files={data}",
           "data.train_batch_size=8", "data.micro_batch_size_per_gpu=4", "data.max_length=512",
           f"model.path={tiny_model_dir}", "trainer.total_training_steps=2", f"trainer.default_local_dir={ckpt}",
           "optim.lr=1e-3", f"hydra.run.dir={tmp_path / 'hydra'}"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]

    losses = [float(line.split("train/loss:")[1].split(" ")[0]) for line in log.splitlines() if "train/loss:" in line]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)

    exported = ckpt / "global_step_2" / "huggingface" / "model.safetensors"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(exported)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k].float(), after[k].float())]
    assert len(changed) >= len(before) // 2, f"only {changed} changed"

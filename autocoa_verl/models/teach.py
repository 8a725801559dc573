"""A short plain-PyTorch fine-tune (fp32, CPU, one sequence per step): the tests' "taught" tiny model and the rollout
benchmark's format lesson. Real SFT runs go through verl's trainer (``recipes/sft.py``); this is for the cases where a
model only needs to know a format or a trajectory by heart, in seconds."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence


def fine_tune(model_dir: str | Path, out_dir: str | Path, examples: Sequence[tuple[list[int], list[int]]],
              steps: int, lr: float, progress: bool = False) -> list[float]:
    """Trains a copy of ``model_dir`` (tokenizer files included) on ``(prompt_ids, response_ids)`` examples, one per
    step in turn, with the loss on the response tokens (an empty prompt trains the whole sequence); saves it to
    ``out_dir``; returns the loss of every step."""
    import torch
    from transformers import AutoModelForCausalLM

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not examples:
        raise ValueError("fine_tune: no examples")
    if out_dir != model_dir:
        shutil.copytree(model_dir, out_dir, dirs_exist_ok=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    batches = [(torch.tensor([prompt + response]), torch.tensor([[-100] * len(prompt) + response]))
               for prompt, response in examples]
    losses = []
    for step in range(steps):
        ids, labels = batches[step % len(batches)]
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress:
            print(f"fine-tune step {step + 1}/{steps} loss {losses[-1]:.3f}", flush=True)
    model.save_pretrained(out_dir)
    return losses

"""Teach the tiny random model one trajectory by heart (plain PyTorch, a few seconds), so that a real engine serving
it writes a real action tag: the engine and the loop are real, only the model's knowledge is made up."""

from __future__ import annotations

import shutil
from pathlib import Path


def overfit_tiny_model(model_dir: Path, out_dir: Path, texts: list[str], steps: int = 150, lr: float = 3e-3) -> float:
    """Copies ``model_dir`` to ``out_dir`` and trains it on ``texts`` (whole sequences); returns the last loss."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(model_dir, out_dir, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batch = [torch.tensor([tokenizer.encode(t, add_special_tokens=False)]) for t in texts]
    for _ in range(steps):
        loss = sum(model(input_ids=ids, labels=ids).loss for ids in batch) / len(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(out_dir)
    return loss.item()

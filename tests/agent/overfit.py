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


def teach_one_search(tiny_model_dir: Path, tokenizer, bm25, question: dict, out_dir: Path) -> str:
    """The tiny model taught, for a one-hop toy ``question``, to search its gold query, read what ``bm25`` returns
    and answer; returns the taught response (everything after the prompt)."""
    from autocoa_verl.protocol import build_prompt, render_observation

    step = question["chain"][0]
    observation = render_observation([d["contents"] for d in bm25.batch_search([step["query"]], topk=3)[0]])
    prompt = tokenizer.apply_chat_template(build_prompt(question["question"]), tokenize=False,
                                           add_generation_prompt=True)
    response = (f"<think>{step['question']}</think>\n<search> {step['query']} </search>{observation}"
                f"<think>So it is {step['answer']}.</think><answer>{question['golden_answers'][0]}</answer>")
    loss = overfit_tiny_model(tiny_model_dir, out_dir, [prompt + response + "<|im_end|>"])
    assert loss < 0.05, f"the tiny model did not learn the trajectory (loss {loss:.3f})"
    return response

"""Teach the tiny random model one trajectory by heart (a few seconds), so that a real engine serving it writes a real
action tag: the engine and the loop are real, only the model's knowledge is made up."""

from __future__ import annotations

from pathlib import Path


def teach_one_search(tiny_model_dir: Path, tokenizer, bm25, question: dict, out_dir: Path) -> str:
    """The tiny model taught, for a one-hop toy ``question``, to search its gold query, read what ``bm25`` returns
    and answer; returns the taught response (everything after the prompt)."""
    from autocoa_verl.models.teach import fine_tune
    from autocoa_verl.protocol import build_prompt, render_observation

    step = question["chain"][0]
    observation = render_observation([d["contents"] for d in bm25.batch_search([step["query"]], topk=3)[0]])
    prompt = tokenizer.apply_chat_template(build_prompt(question["question"]), tokenize=False,
                                           add_generation_prompt=True)
    response = (f"<think>{step['question']}</think>\n<search> {step['query']} </search>{observation}"
                f"<think>So it is {step['answer']}.</think><answer>{question['golden_answers'][0]}</answer>")
    text = tokenizer.encode(prompt + response + "<|im_end|>", add_special_tokens=False)
    loss = fine_tune(tiny_model_dir, out_dir, [([], text)], steps=150, lr=3e-3)[-1]
    assert loss < 0.05, f"the tiny model did not learn the trajectory (loss {loss:.3f})"
    return response

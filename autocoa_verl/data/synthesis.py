"""Teacher trajectories for SFT: a teacher model runs the CoA agent loop (standalone mode: exactly the rollout code)
against the retriever on training questions; trajectories whose answer scores correct are kept.

A kept trajectory is *CoA* when it searched and *CoT* when the teacher answered with no tool; ``coa_target`` and
``cot_target`` set the mix (the paper: 5k + 1k), and synthesis stops once both are met or the questions run out.
Segments come from the loop's response mask (contiguous runs of model tokens and of observation tokens), so who wrote
what is recorded, never re-parsed.

Output (``out_dir``): ``trajectories.jsonl`` and ``done_ids.txt`` grow batch by batch, so an interrupted run resumes
where it stopped; ``trajectories.parquet`` (the SFT format of :mod:`autocoa_verl.data.sft_files`) is written at the end.
Run with ``recipes/synthesize.py`` (``make synthesize``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from autocoa_verl.data.sft_files import trajectory_row, write_sft_parquet
from autocoa_verl.protocol import build_prompt
from autocoa_verl.reward import compute_score


def segments_from_output(tokenizer: Any, output: Any) -> list[dict[str, str]]:
    """Model / env segments of an ``AgentLoopOutput`` from its response mask (1 = model, 0 = observation)."""
    segments, run, source = [], [], None
    for token, mask in zip(output.response_ids, output.response_mask):
        this = "model" if mask else "env"
        if this != source and run:
            segments.append({"source": source, "text": tokenizer.decode(run)})
            run = []
        source = this
        run.append(token)
    if run:
        segments.append({"source": source, "text": tokenizer.decode(run)})
    return segments


def keep(row: dict, output: Any, tokenizer: Any, preset: str) -> list[dict] | None:
    """The trajectory's segments if it answered correctly in a well-formed way, else None."""
    if output.extra_fields["coa_outcome"] != "answer":
        return None
    segments = segments_from_output(tokenizer, output)
    text = "".join(s["text"] for s in segments)
    scores = compute_score(row.get("data_source"), text, row["golden_answers"], preset=preset)
    return segments if scores["em"] == 1.0 and scores["format_ok"] == 1.0 else None


class _Progress:
    """What an output directory already holds: kept rows by kind, and the question ids already processed."""

    def __init__(self, out_dir: Path):
        self.rows_path, self.done_path = out_dir / "trajectories.jsonl", out_dir / "done_ids.txt"
        rows = [json.loads(line) for line in open(self.rows_path)] if self.rows_path.exists() else []
        self.rows = list({r["id"]: r for r in rows}.values())  # a batch re-run after a crash writes its rows again
        self.done = set(self.done_path.read_text().split()) if self.done_path.exists() else set()

    def count(self, kind: str) -> int:
        return sum(r["kind"] == kind for r in self.rows)

    def add(self, rows: list[dict], question_ids: list[str]) -> None:
        with open(self.rows_path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        with open(self.done_path, "a") as f:
            f.writelines(f"{q}\n" for q in question_ids)
        self.rows += rows
        self.done.update(question_ids)


async def synthesize(rollout: Any, questions: Sequence[dict], out_dir: str | Path, *, coa_target: int,
                     cot_target: int, samples_per_question: int = 1, batch_size: int = 32,
                     sampling_params: dict[str, Any] | None = None, preset: str = "search_r1",
                     progress: bool = True) -> dict[str, int]:
    """Runs the teacher (``rollout``: a :class:`~autocoa_verl.agent.standalone.StandaloneRollout`) on questions not
    yet done in ``out_dir`` and keeps correct trajectories up to the targets; returns the counts."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = _Progress(out_dir)
    todo = [q for q in questions if str(q["id"]) not in state.done]
    targets = {"coa": coa_target, "cot": cot_target}
    full = lambda: all(state.count(k) >= n for k, n in targets.items())  # noqa: E731
    bar = tqdm(total=coa_target + cot_target, initial=min(state.count("coa"), coa_target)
               + min(state.count("cot"), cot_target), desc="kept trajectories", disable=not progress)
    seen = 0
    for start in range(0, len(todo), batch_size):
        if full():
            break
        batch = todo[start : start + batch_size]
        samples = [q for q in batch for _ in range(samples_per_question)]
        outputs = await rollout.run([{"raw_prompt": build_prompt(q["question"], preset)} for q in samples],
                                    validate=False, sampling_params=sampling_params)
        kept = []
        for i, (question, output) in enumerate(zip(samples, outputs)):
            segments = keep(question, output, rollout.tokenizer, preset)
            if segments is None:
                continue
            row = trajectory_row(f"{question['id']}-s{i % samples_per_question}",
                                 build_prompt(question["question"], preset), segments, question_id=str(question["id"]))
            if state.count(row["kind"]) + sum(r["kind"] == row["kind"] for r in kept) < targets[row["kind"]]:
                kept.append(row)
        before = min(state.count("coa"), coa_target) + min(state.count("cot"), cot_target)
        state.add(kept, [str(q["id"]) for q in batch])
        bar.update(min(state.count("coa"), coa_target) + min(state.count("cot"), cot_target) - before)
        seen += len(samples)
        bar.set_postfix(samples=seen, coa=state.count("coa"), cot=state.count("cot"))
    bar.close()
    if state.rows:
        write_sft_parquet(state.rows, out_dir / "trajectories.parquet", "trajectories")
    return {"coa": state.count("coa"), "cot": state.count("cot"), "questions_done": len(state.done),
            "samples_this_run": seen}

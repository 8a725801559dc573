"""Teacher trajectories for SFT: a teacher model runs the CoA agent loop (standalone mode: exactly the rollout code)
against the retriever on training questions; trajectories whose answer scores correct are kept.

A kept trajectory is *CoA* when it searched and *CoT* when the teacher answered with no tool; ``coa_target`` and
``cot_target`` set the mix (the paper: 5k + 1k), and synthesis stops once both are met or the questions run out.
Segments come from the loop's response mask (contiguous runs of model tokens and of observation tokens), so who wrote
what is recorded, never re-parsed.

Output (``out_dir``): ``trajectories.jsonl`` and ``trajectories_done_ids.txt`` (``pairs.*`` likewise) grow batch by
batch, so an interrupted run resumes where it stopped; ``trajectories.parquet`` and ``pairs.parquet`` (the SFT
formats of :mod:`autocoa_verl.data.sft_files`) are written at the end.
Run with ``recipes/synthesize.py`` (``make synthesize``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from autocoa_verl.data.sft_files import trajectory_row, write_sft_parquet
from autocoa_verl.jsonl import JsonlRecords
from autocoa_verl.protocol import build_prompt, get_preset
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


class _ResumableOutput:
    """Rows appended to ``<name>.jsonl`` and the ids of the inputs done to ``<name>_done_ids.txt``, batch by batch, so
    an interrupted run resumes where it stopped (a batch re-run after a crash writes its rows again: ids de-duplicate).
    """

    def __init__(self, out_dir: Path, name: str):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.log, self.done_path = JsonlRecords(out_dir / f"{name}.jsonl"), out_dir / f"{name}_done_ids.txt"
        self.rows = {r["id"]: r for r in self.log.records}
        self.done = set(self.done_path.read_text().split()) if self.done_path.exists() else set()
        self.kinds = Counter(r.get("kind") for r in self.rows.values())  # kept rows by kind (trajectories)

    def add(self, rows: list[dict], done_ids: list[str]) -> None:
        self.log.add(rows)
        with open(self.done_path, "a") as f:
            f.writelines(f"{i}\n" for i in done_ids)
        self.kinds.update(r.get("kind") for r in rows if r["id"] not in self.rows)
        self.rows.update({r["id"]: r for r in rows})
        self.done.update(done_ids)


async def synthesize(rollout: Any, questions: Sequence[dict], out_dir: str | Path, *, coa_target: int,
                     cot_target: int, samples_per_question: int = 1, batch_size: int = 32,
                     sampling_params: dict[str, Any] | None = None, preset: str = "search_r1",
                     progress: bool = True) -> dict[str, int]:
    """Runs the teacher (``rollout``: a :class:`~autocoa_verl.agent.standalone.StandaloneRollout`) on questions not
    yet done in ``out_dir`` and keeps correct trajectories up to the targets; returns the counts."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    state = _ResumableOutput(out_dir, "trajectories")
    todo = [q for q in questions if str(q["id"]) not in state.done]
    targets = {"coa": coa_target, "cot": cot_target}
    kinds = state.kinds
    toward_targets = lambda: sum(min(kinds[k], n) for k, n in targets.items())  # noqa: E731
    bar = tqdm(total=sum(targets.values()), initial=toward_targets(), desc="kept trajectories",
               disable=not progress)
    seen = 0
    for start in range(0, len(todo), batch_size):
        wanted = {k: n - kinds[k] for k, n in targets.items()}
        if all(n <= 0 for n in wanted.values()):
            break
        batch = todo[start : start + batch_size]
        samples = [q for q in batch for _ in range(samples_per_question)]
        prompts = [build_prompt(q["question"], preset) for q in samples]
        outputs = await rollout.run([{"raw_prompt": prompt} for prompt in prompts], validate=False,
                                    sampling_params=sampling_params)
        kept = []
        for i, (question, prompt, output) in enumerate(zip(samples, prompts, outputs)):
            segments = keep(question, output, rollout.tokenizer, preset)
            if segments is None:
                continue
            row = trajectory_row(f"{question['id']}-s{i % samples_per_question}", prompt, segments,
                                 question_id=str(question["id"]))
            if wanted[row["kind"]] > 0:
                wanted[row["kind"]] -= 1
                kept.append(row)
        before = toward_targets()
        state.add(kept, [str(q["id"]) for q in batch])
        bar.update(toward_targets() - before)
        seen += len(samples)
        bar.set_postfix(samples=seen, coa=kinds["coa"], cot=kinds["cot"])
    bar.close()
    if state.rows:
        write_sft_parquet(list(state.rows.values()), out_dir / "trajectories.parquet", "trajectories")
    return {"coa": kinds["coa"], "cot": kinds["cot"], "questions_done": len(state.done), "samples_this_run": seen}


def branch_point(segments: list[dict], preset: str) -> str | None:
    """The teacher's own text before its first decision (a search or an answer opening tag), or None."""
    p = get_preset(preset)
    first = segments[0]["text"]
    cuts = [i for i in (first.find(p.search_open), first.find(p.answer_open)) if i >= 0]
    return first[: min(cuts)] if cuts else None


async def synthesize_pairs(rollout: Any, trajectories: Sequence[dict], questions: dict[str, dict],
                           out_dir: str | Path, *, batch_size: int = 32, sampling_params: dict[str, Any] | None = None,
                           preset: str = "search_r1", progress: bool = True) -> dict[str, int]:
    """Step-level pairs (SFT stage 1) from kept trajectories: at the teacher's first decision, branch into *act*
    (the prefix forced on with the search tag) and *answer now* (forced on with the answer tag), roll both out with the
    loop, and keep a pair when exactly one branch reaches the correct answer; that branch is *chosen* (so acting is
    preferred only where it helped). Appends to ``pairs.jsonl`` (resumable by trajectory id), writes
    ``pairs.parquet``; returns counts."""
    from tqdm import tqdm

    p = get_preset(preset)
    state = _ResumableOutput(Path(out_dir), "pairs")
    todo = [t for t in trajectories if t["id"] not in state.done and branch_point(t["segments"], preset) is not None]
    openers = {"act": p.search_open, "answer": p.answer_open}
    for start in tqdm(range(0, len(todo), batch_size), desc="contrastive pairs", disable=not progress):
        batch = todo[start : start + batch_size]
        requests = [{"raw_prompt": t["prompt"], "assistant_prefix": branch_point(t["segments"], preset) + opener}
                    for t in batch for opener in openers.values()]
        outputs = await rollout.run(requests, validate=False, sampling_params=sampling_params)
        new = []
        for i, t in enumerate(batch):
            prefix, question = branch_point(t["segments"], preset), questions[t["question_id"]]
            branches = {}
            for (name, opener), output in zip(openers.items(), outputs[2 * i : 2 * i + 2]):
                segments = segments_from_output(rollout.tokenizer, output)
                if not segments or segments[0]["source"] != "model":
                    segments.insert(0, {"source": "model", "text": ""})
                segments[0]["text"] = opener + segments[0]["text"]
                while segments[-1]["source"] == "env":  # cut by the length limit after an observation
                    segments.pop()
                text = prefix + "".join(s["text"] for s in segments)
                correct = output.extra_fields["coa_outcome"] == "answer" and compute_score(
                    question.get("data_source"), text, question["golden_answers"], preset=preset)["em"] == 1.0
                branches[name] = (segments, correct)
            if branches["act"][1] != branches["answer"][1]:
                chosen = "act" if branches["act"][1] else "answer"
                rejected = "answer" if chosen == "act" else "act"
                new.append({"id": f"{t['id']}-pair", "prompt": t["prompt"],
                            "prefix": [{"source": "model", "text": prefix}] if prefix else [],
                            "chosen": branches[chosen][0], "rejected": branches[rejected][0],
                            "chosen_acts": chosen == "act", "question_id": t["question_id"]})
        state.add(new, [t["id"] for t in batch])
    if state.rows:
        write_sft_parquet(list(state.rows.values()), Path(out_dir) / "pairs.parquet", "pairs")
    return {"pairs": len(state.rows), "acting_chosen": sum(r["chosen_acts"] for r in state.rows.values())}

"""The toy-world oracle teacher: correct trajectories written from each question's gold chain, deterministically.

Run: ``python -m autocoa_verl.data.oracle QUESTIONS.jsonl CORPUS.jsonl OUT.parquet`` (``--help``).

A trajectory is a list of segments ``{"source": "model" | "env", "text": ...}`` so that every consumer knows which
text the model wrote and which the environment returned, without re-parsing tags. Search questions become
think -> search the sub-question -> read the gold passage -> ... -> answer (CoA); questions that need no search
become think -> answer (CoT).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autocoa_verl.protocol import DEFAULT_PRESET, build_prompt, get_preset, render_observation


def _answer(text: str, preset) -> str:
    return f"{preset.answer_open}{text}{preset.answer_close}"


def oracle_trajectory(row: dict, passages: dict[str, str], preset: str = DEFAULT_PRESET) -> list[dict[str, str]]:
    """The oracle's trajectory for one toy-world question row (with ``chain`` and ``needs_search``).

    Raises:
        KeyError: a chain step names a passage id that is not in ``passages``.
    """
    p = get_preset(preset)
    answer = row["golden_answers"][0]
    if not row["needs_search"]:
        thought = f"{p.think_open}The question itself tells me what I need; no search is needed.{p.think_close}"
        return [{"source": "model", "text": thought + _answer(answer, p)}]
    segments = []
    for i, step in enumerate(row["chain"]):
        lead = "I do not know this" if i == 0 else f"I found {row['chain'][i - 1]['answer']}. Next"
        thought = f"{p.think_open}{lead}: {step['question']}{p.think_close}"
        segments.append({"source": "model", "text": f"{thought}\n{p.search_open} {step['query']} {p.search_close}"})
        segments.append({"source": "env", "text": render_observation([passages[step["doc_id"]]], p)})
    final = f"{p.think_open}So the answer is {answer}.{p.think_close}"
    segments.append({"source": "model", "text": final + _answer(answer, p)})
    return segments


def trajectory_text(segments: list[dict[str, str]]) -> str:
    return "".join(s["text"] for s in segments)


def write_oracle_parquet(questions_path: str | Path, corpus_path: str | Path, out_path: str | Path,
                         preset: str = DEFAULT_PRESET) -> int:
    """Writes one row per question: ``messages`` (prompt + the whole trajectory as one assistant turn), plus the
    trajectory's ``segments``; returns the row count."""
    import pandas as pd

    from autocoa_verl.data.qa_files import read_qa_jsonl
    from retriever_server.corpus import load_corpus

    passages = {doc["id"]: doc["contents"] for doc in load_corpus(corpus_path)}
    records = []
    for row in read_qa_jsonl(questions_path):
        if "chain" not in row or "needs_search" not in row:
            raise ValueError(f"{questions_path}: row {row['id']!r} has no gold 'chain'/'needs_search' "
                             "(the oracle needs toy-world questions)")
        segments = oracle_trajectory(row, passages, preset)
        messages = build_prompt(row["question"], preset) + [{"role": "assistant", "content": trajectory_text(segments)}]
        records.append({"id": str(row["id"]), "messages": messages, "segments": segments})
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame.from_records(records).to_parquet(out_path, index=False)
    return len(records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write oracle trajectories for toy-world questions (SFT parquet).")
    parser.add_argument("questions", help="toy-world question jsonl (with gold chains)")
    parser.add_argument("corpus", help="toy-world corpus jsonl")
    parser.add_argument("output", help="parquet to write")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="tag protocol (search_r1|autocoa)")
    args = parser.parse_args(argv)
    n = write_oracle_parquet(args.questions, args.corpus, args.output, args.preset)
    print(f"wrote {n} oracle trajectories to {args.output}")


if __name__ == "__main__":
    main()

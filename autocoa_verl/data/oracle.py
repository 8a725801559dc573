"""The toy-world oracle teacher: correct trajectories written from each question's gold chain, deterministically.

Run: ``python -m autocoa_verl.data.oracle QUESTIONS.jsonl CORPUS.jsonl OUT.parquet [--pairs PAIRS.parquet]``.

A trajectory is a list of segments ``{"source": "model" | "env", "text": ...}`` so that every consumer knows which
text the model wrote and which the environment returned, without re-parsing tags. Search questions become
think -> search the sub-question -> read the gold passage -> ... -> answer (CoA); questions that need no search
become think -> answer (CoT).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autocoa_verl.data.sft_files import trajectory_row, write_sft_parquet
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


def answers_by_kind(rows: list[dict]) -> dict[str, list[str]]:
    """Every question's first gold answer, by question kind (the pool wrong guesses are drawn from)."""
    pool: dict[str, list[str]] = {}
    for r in rows:
        pool.setdefault(r.get("kind"), []).append(r["golden_answers"][0])
    return pool


def distractor(row: dict, pool: dict[str, list[str]]) -> str:
    """A wrong answer of the right kind, chosen deterministically: another question's gold answer."""
    wrong = [a for a in pool.get(row.get("kind"), []) if a not in row["golden_answers"]]
    return wrong[sum(map(ord, str(row["id"]))) % len(wrong)] if wrong else "I do not know"


def oracle_pairs(row: dict, passages: dict[str, str], wrong_answer: str,
                 preset: str = DEFAULT_PRESET) -> list[dict[str, Any]]:
    """Step-level *when to act* pairs for one question: a shared prefix, a chosen and a rejected continuation.

    At each step of a search question the prefix ends with the thought that names the unknown fact; *chosen*
    searches for it, *rejected* guesses an answer (``wrong_answer``) without searching. For a question that needs no
    search, *chosen* reasons to the answer and *rejected* searches anyway.
    """
    p = get_preset(preset)
    segments = oracle_trajectory(row, passages, preset)
    model = lambda text: [{"source": "model", "text": text}]  # noqa: E731
    if not row["needs_search"]:
        question = row["question"]
        search = (f"{p.think_open}I do not know this: {question}{p.think_close}\n"
                  f"{p.search_open} {question} {p.search_close}")
        return [{"prefix": [], "chosen": segments, "rejected": model(search), "chosen_acts": False}]
    pairs = []
    for i, step in enumerate(row["chain"]):
        thought, action = segments[2 * i]["text"].split("\n", 1)
        guess = f"{p.think_open}It is probably {wrong_answer}.{p.think_close}{_answer(wrong_answer, p)}"
        pairs.append({"prefix": segments[: 2 * i] + model(thought + "\n"), "chosen": model(action),
                      "rejected": model(guess), "chosen_acts": True})
    return pairs


def write_oracle_parquet(questions_path: str | Path, corpus_path: str | Path, out_path: str | Path,
                         preset: str = DEFAULT_PRESET, pairs_path: str | Path | None = None) -> tuple[int, int]:
    """Writes the oracle's trajectories (one per question) and, given ``pairs_path``, its contrastive pairs, in the
    formats of :mod:`autocoa_verl.data.sft_files`; returns (trajectories, pairs) written."""
    from autocoa_verl.data.qa_files import read_qa_jsonl
    from retriever_server.corpus import load_corpus

    passages = {doc["id"]: doc["contents"] for doc in load_corpus(corpus_path)}
    rows = read_qa_jsonl(questions_path)
    trajectories, pairs, pool = [], [], answers_by_kind(rows)
    for row in rows:
        if "chain" not in row or "needs_search" not in row:
            raise ValueError(f"{questions_path}: row {row['id']!r} has no gold 'chain'/'needs_search' "
                             "(the oracle needs toy-world questions)")
        prompt = build_prompt(row["question"], preset)
        trajectories.append(trajectory_row(str(row["id"]), prompt, oracle_trajectory(row, passages, preset)))
        for i, pair in enumerate(oracle_pairs(row, passages, distractor(row, pool), preset)):
            pairs.append({"id": f"{row['id']}-step{i}", "prompt": prompt, **pair})
    write_sft_parquet(trajectories, out_path, "trajectories")
    if pairs_path is not None:
        write_sft_parquet(pairs, pairs_path, "pairs")
    return len(trajectories), len(pairs) if pairs_path is not None else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write oracle trajectories (SFT-2/3) and contrastive pairs (SFT-1) "
                                                 "for toy-world questions.")
    parser.add_argument("questions", help="toy-world question jsonl (with gold chains)")
    parser.add_argument("corpus", help="toy-world corpus jsonl")
    parser.add_argument("output", help="trajectories parquet to write")
    parser.add_argument("--pairs", help="also write step-level contrastive pairs to this parquet")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="tag protocol (search_r1|autocoa)")
    args = parser.parse_args(argv)
    n, m = write_oracle_parquet(args.questions, args.corpus, args.output, args.preset, args.pairs)
    print(f"wrote {n} oracle trajectories to {args.output}" + (f" and {m} pairs to {args.pairs}" if args.pairs else ""))


if __name__ == "__main__":
    main()

"""FlashRAG-format QA files (``id``, ``question``, ``golden_answers``) -> verl RL parquet.

Run: ``python -m autocoa_verl.data.qa_files INPUT.jsonl OUTPUT.parquet --data-source nq`` (``--help``).

Reading validates every row and reports every bad one by file, line and field before anything is written, so a
bad file is never half-converted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable

from autocoa_verl.errors import MAX_REPORTED_ERRORS, DataFileError
from autocoa_verl.protocol import DEFAULT_PRESET, build_prompt

class QAFileError(DataFileError):
    """A QA file has bad rows; ``errors`` lists ``path:line: message`` for each."""


def _row_problem(row: object, seen_ids: set[str]) -> str | None:
    if not isinstance(row, dict):
        return f"row must be a JSON object, got {type(row).__name__}"
    for key in ("id", "question", "golden_answers"):
        if key not in row:
            return f"missing field '{key}'"
    if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool):
        return f"field 'id' must be a string or an integer, got {type(row['id']).__name__}"
    if str(row["id"]) in seen_ids:
        return f"field 'id': duplicate id {row['id']!r}"
    if not isinstance(row["question"], str) or not row["question"].strip():
        return "field 'question' must be a non-empty string"
    answers = row["golden_answers"]
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, (str, int, float)) for a in answers):
        return "field 'golden_answers' must be a non-empty list of strings (or one string)"
    if not all(str(a).strip() for a in answers):
        return "field 'golden_answers' holds an empty answer"
    return None


def read_qa_jsonl(path: str | Path) -> list[dict]:
    """Reads and validates a FlashRAG QA jsonl file; ``golden_answers`` come back as lists of strings.

    Raises:
        FileNotFoundError: the file does not exist.
        QAFileError: one or more rows are bad (each named by line and field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"QA file not found: {path}")
    rows, errors, total_bad, seen_ids = [], [], 0, set()
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problem = _row_problem(row, seen_ids)
            except json.JSONDecodeError as e:
                problem = f"invalid JSON ({e.msg} at column {e.colno})"
            if problem:
                total_bad += 1
                if len(errors) < MAX_REPORTED_ERRORS:
                    errors.append(f"{path}:{line_no}: {problem}")
                continue
            seen_ids.add(str(row["id"]))
            answers = row["golden_answers"]
            row["golden_answers"] = [str(a).strip() for a in ([answers] if isinstance(answers, str) else answers)]
            rows.append(row)
    if total_bad:
        raise QAFileError(path, errors, total_bad)
    if not rows:
        raise QAFileError(path, [f"{path}: no rows"], 1)
    return rows


def verl_rl_row(row: dict, index: int, data_source: str, split: str, preset: str = DEFAULT_PRESET) -> dict:
    """One verl RL-dataset row (``prompt`` chat messages, ``reward_model.ground_truth.target``, ``extra_info``)."""
    extra = {"index": index, "id": str(row["id"]), "split": split, "question": row["question"]}
    for key in ("hops", "needs_search"):
        if key in row:
            extra[key] = row[key]
    if isinstance(row.get("chain"), list):  # each hop's gold answer: the world model's fidelity is measured per hop
        extra["chain_answers"] = [str(hop.get("answer", "")) for hop in row["chain"] if isinstance(hop, dict)]
    return {
        "data_source": data_source,
        "prompt": build_prompt(row["question"], preset),
        "ability": "qa",
        "reward_model": {"style": "rule", "ground_truth": {"target": list(row["golden_answers"])}},
        "extra_info": extra,
    }


def write_verl_parquet(rows: Iterable[dict], path: str | Path, data_source: str, split: str,
                       preset: str = DEFAULT_PRESET) -> int:
    """Writes QA rows as a verl RL parquet; returns the row count."""
    import pandas as pd

    records = [verl_rl_row(row, i, data_source, split, preset) for i, row in enumerate(rows)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame.from_records(records).to_parquet(path, index=False)
    return len(records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert a FlashRAG-format QA jsonl file to verl RL parquet.")
    parser.add_argument("input", help="FlashRAG QA jsonl (id, question, golden_answers per line)")
    parser.add_argument("output", help="parquet file to write")
    parser.add_argument("--data-source", default=None, help="data_source column (default: the input file's stem)")
    parser.add_argument("--split", default="train", help="split name recorded in extra_info (default train)")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="tag protocol of the prompts (search_r1|autocoa)")
    args = parser.parse_args(argv)
    try:
        rows = read_qa_jsonl(args.input)
    except (QAFileError, FileNotFoundError) as e:
        parser.exit(2, f"error: {e}\n")
    n = write_verl_parquet(rows, args.output, args.data_source or Path(args.input).stem, args.split, args.preset)
    print(f"wrote {n} rows to {args.output}")


if __name__ == "__main__":
    main()

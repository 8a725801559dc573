"""The two SFT data formats, written by the oracle teacher and by synthesis, read by the SFT datasets.

- **Trajectories** (SFT stages 2 and 3): ``id``, ``prompt`` (chat messages), ``segments`` (``[{"source": "model" |
  "env", "text": ...}]``: who wrote each span, so masks never come from re-parsing tags), ``kind`` (``coa`` when it
  searched, ``cot`` when not), and ``messages`` (prompt + the whole trajectory as one assistant turn, for people and
  for verl's own dataset).
- **Contrastive pairs** (SFT stage 1, *when to act*): ``id``, ``prompt``, ``prefix`` (the segments both branches
  share; may be empty), ``chosen`` and ``rejected`` (segment lists continuing the prefix), ``chosen_acts`` (whether
  the chosen branch is the one that searches).

:func:`read_sft_parquet` checks every row and names the file, row, id and field of each problem before any training
starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from autocoa_verl.errors import MAX_REPORTED_ERRORS, DataFileError

SOURCES = ("model", "env")
KINDS = ("coa", "cot")
FORMATS = ("trajectories", "pairs")


class SFTFileError(DataFileError):
    """An SFT parquet has bad rows; ``errors`` lists ``path: row N (id X): problem`` for each."""


def plain(value: Any) -> Any:
    """Parquet gives nested lists back as numpy arrays: turn them (recursively) into lists."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _messages_problem(field: str, messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f"field '{field}' must be a non-empty list of chat messages"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"field '{field}'[{i}] must be a message with string 'role' and 'content'"
    return None


def _segments_problem(field: str, segments: Any, is_prefix: bool = False) -> str | None:
    if not isinstance(segments, list) or (not segments and not is_prefix):
        return f"field '{field}' must be a{'' if is_prefix else ' non-empty'} list of segments"
    for i, s in enumerate(segments):
        if not isinstance(s, dict) or s.get("source") not in SOURCES:
            return f"field '{field}'[{i}].source must be one of {SOURCES}"
        if not isinstance(s.get("text"), str) or not s["text"]:
            return f"field '{field}'[{i}].text must be a non-empty string"
    if not is_prefix and segments[-1]["source"] != "model":
        return f"field '{field}' must end with a model segment (the model writes the last word)"
    return None


def row_problem(row: dict, fmt: str) -> str | None:
    """What is wrong with one row of format ``fmt`` (``trajectories`` or ``pairs``), or None."""
    if not isinstance(row.get("id"), str) or not row["id"]:
        return "field 'id' must be a non-empty string"
    problem = _messages_problem("prompt", row.get("prompt"))
    if problem:
        return problem
    if fmt == "trajectories":
        if row.get("kind") not in KINDS:
            return f"field 'kind' must be one of {KINDS}"
        return _segments_problem("segments", row.get("segments"))
    problem = _segments_problem("prefix", row.get("prefix"), is_prefix=True)
    if problem:
        return problem
    if not isinstance(row.get("chosen_acts"), bool):
        return "field 'chosen_acts' must be a boolean"
    for field in ("chosen", "rejected"):
        problem = _segments_problem(field, row.get(field))
        if problem:
            return problem
    if row["chosen"] == row["rejected"]:
        return "fields 'chosen' and 'rejected' are identical"
    return None


def read_sft_parquet(path: str | Path, fmt: str) -> list[dict]:
    """Reads and checks an SFT parquet of format ``fmt``; rows come back as plain Python values.

    Raises:
        FileNotFoundError: no such file.
        SFTFileError: one or more rows are bad (each named by row, id and field).
    """
    import pandas as pd

    if fmt not in FORMATS:
        raise ValueError(f"unknown SFT format {fmt!r}; expected one of {FORMATS}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such SFT data file")
    rows = [plain(r) for r in pd.read_parquet(path).to_dict(orient="records")]
    errors, total = [], 0
    for i, row in enumerate(rows):
        problem = row_problem(row, fmt)
        if problem:
            total += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(f"row {i} (id {row.get('id')!r}): {problem}")
    if total:
        raise SFTFileError(path, errors, total)
    if not rows:
        raise SFTFileError(path, ["the file has no rows"], 1)
    return rows


def write_sft_parquet(rows: Iterable[dict], path: str | Path, fmt: str) -> int:
    """Checks and writes rows of format ``fmt``; returns the count. Nothing is written if a row is bad."""
    import pandas as pd

    rows = list(rows)
    errors = [f"row {i} (id {r.get('id')!r}): {p}" for i, r in enumerate(rows) if (p := row_problem(r, fmt))]
    if errors:
        raise SFTFileError(path, errors[:MAX_REPORTED_ERRORS], len(errors))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame.from_records(rows).to_parquet(path, index=False)
    return len(rows)


def trajectory_text(segments: list[dict[str, str]]) -> str:
    return "".join(s["text"] for s in segments)


def trajectory_row(row_id: str, prompt: list[dict], segments: list[dict], **extra: Any) -> dict:
    """A trajectories-format row (``kind`` from whether any observation was returned)."""
    kind = "coa" if any(s["source"] == "env" for s in segments) else "cot"
    messages = prompt + [{"role": "assistant", "content": trajectory_text(segments)}]
    return {"id": row_id, "prompt": prompt, "segments": segments, "kind": kind, "messages": messages, **extra}

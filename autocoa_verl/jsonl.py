"""Append-only JSONL record files, the resumable output of long runs (evaluation records, synthesized trajectories)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable


class JsonlRecords:
    """The records in ``path`` so far, and appends that survive a crash: each batch is written (and flushed) as it
    comes, and on reopening a line cut short by a crash is skipped with a message, so that its work runs again."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: list[dict] = []
        if self.path.exists():
            for line_no, line in enumerate(open(self.path, encoding="utf-8"), 1):
                if line.strip():
                    try:
                        self.records.append(json.loads(line))
                    except json.JSONDecodeError:
                        print(f"{self.path}:{line_no}: unreadable record skipped (it will be re-run)")

    def add(self, records: Iterable[dict]) -> list[dict]:
        """Appends ``records``; returns them as a list."""
        records = list(records)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        self.records.extend(records)
        return records

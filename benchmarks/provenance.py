"""Benchmark reports: where one came from (the commit and the command that produced it), and writing it out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]


def provenance(script: str, argv: Sequence[str] | None = None) -> dict[str, str]:
    """``{"commit": short HEAD, "command": "python benchmarks/<script> <args>"}`` (args: ``argv`` or the process's)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    args = sys.argv[1:] if argv is None else argv
    return {"commit": commit.stdout.strip(), "command": " ".join(["python", f"benchmarks/{script}", *args])}


def write_report(out: Path, stem: str, report: dict, text: str, indent: int = 2) -> None:
    """Writes ``<out>/<stem>.json`` and ``<out>/<stem>.md`` and prints the markdown and where both went."""
    (out / f"{stem}.json").write_text(json.dumps(report, indent=indent))
    (out / f"{stem}.md").write_text(text)
    print(text)
    print(f"report: {out}/{stem}.json, {out}/{stem}.md")

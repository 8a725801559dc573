"""Where a committed benchmark report came from: the commit and the command that produced it."""

from __future__ import annotations

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

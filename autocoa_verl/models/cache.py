"""A model directory counts as built only once its marker file is written, so an interrupted build is redone."""

from __future__ import annotations

from pathlib import Path

MARKER = ".autocoa_complete"


def complete_marker(model_dir: str | Path) -> Path:
    return Path(model_dir) / MARKER


def mark_complete(model_dir: str | Path) -> None:
    complete_marker(model_dir).write_text("ok\n")

"""FlashRAG corpus files: ``{"id": ..., "contents": "\\"Title\\"\\ntext"}`` per line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tqdm import tqdm


class CorpusError(ValueError):
    """A corpus file is missing or has a bad row (the message names file and line)."""


def read_corpus(path: str | Path, progress: bool = False) -> tuple[list[dict[str, str]], str]:
    """Reads a FlashRAG corpus in one pass: its documents and the sha256 of the file's bytes (an index is only
    served with the corpus it was built from). Every row must have a string ``contents`` and an ``id`` (ids are
    kept as strings).

    Raises:
        CorpusError: missing file, invalid JSON, a missing/ill-typed field, a duplicate id, or an empty corpus.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file not found: {path}")
    docs, seen, digest = [], set(), hashlib.sha256()
    with open(path, "rb") as f:
        for line_no, raw in enumerate(tqdm(f, desc=f"read {path.name}", unit=" docs", disable=not progress), 1):
            digest.update(raw)
            line = raw.decode("utf-8")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{line_no}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict) or "id" not in row or "contents" not in row:
                raise CorpusError(f"{path}:{line_no}: a row needs fields 'id' and 'contents'")
            if not isinstance(row["contents"], str):
                raise CorpusError(f"{path}:{line_no}: field 'contents' must be a string")
            doc_id = str(row["id"])
            if doc_id in seen:
                raise CorpusError(f"{path}:{line_no}: field 'id': duplicate id {doc_id!r}")
            seen.add(doc_id)
            docs.append({"id": doc_id, "contents": row["contents"]})
    if not docs:
        raise CorpusError(f"{path}: the corpus is empty")
    return docs, digest.hexdigest()


def load_corpus(path: str | Path, progress: bool = False) -> list[dict[str, str]]:
    """The documents of a FlashRAG corpus (see ``read_corpus``)."""
    return read_corpus(path, progress)[0]

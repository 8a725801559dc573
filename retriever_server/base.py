"""The ``Retriever`` interface and the index manifest every backend writes and checks."""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Sequence

from retriever_server.corpus import read_corpus

MANIFEST = "manifest.json"


class IndexMismatchError(RuntimeError):
    """An index does not belong to the corpus or encoder it is asked to serve (the message says which)."""


class Retriever(ABC):
    """Top-k search over a FlashRAG corpus. Subclasses implement ``_build_index``, ``_load_index`` and ``_search``.

    Build with ``Backend.build(corpus_path, index_dir, **options)``; open a built index with
    ``Backend.open(corpus_path, index_dir, **options)``, which refuses an index whose manifest does not match.
    """

    backend: ClassVar[str]

    def __init__(self, corpus: list[dict[str, str]], options: dict[str, Any]):
        self.corpus = corpus
        self.options = options

    # --- what a backend implements -------------------------------------------------------------------------
    @abstractmethod
    def _build_index(self, index_dir: Path, progress: bool) -> dict[str, Any]:
        """Indexes ``self.corpus`` into ``index_dir``; returns backend facts for the manifest."""

    @abstractmethod
    def _load_index(self, index_dir: Path) -> None:
        """Loads what ``_build_index`` wrote."""

    @abstractmethod
    def _search(self, queries: Sequence[str], topk: int) -> tuple[list[list[int]], list[list[float]]]:
        """Corpus positions and scores of the ``topk`` best passages per query, best first."""

    def manifest_expectations(self) -> dict[str, Any]:
        """Manifest fields that must equal this retriever's options (e.g. the encoder)."""
        return {}

    # --- shared --------------------------------------------------------------------------------------------
    def batch_search(self, queries: Sequence[str], topk: int = 3, return_scores: bool = False):
        """FlashRAG's signature: per query, the ``topk`` best ``{"id", "contents"}`` documents (and their scores
        when ``return_scores``, as FlashRAG's ``(documents, scores)`` pair)."""
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        if not queries:
            return ([], []) if return_scores else []
        positions, scores = self._search(list(queries), min(topk, len(self.corpus)))
        documents = [[self.corpus[i] for i in row] for row in positions]
        return (documents, scores) if return_scores else documents

    @classmethod
    def build(cls, corpus_path: str | Path, index_dir: str | Path, progress: bool = True, **options: Any):
        """Indexes the corpus into ``index_dir`` (with its manifest) and returns the ready retriever."""
        start = time.perf_counter()
        corpus, fingerprint = read_corpus(corpus_path, progress=progress)
        retriever = cls(corpus, options)
        index_dir = Path(index_dir)
        index_dir.mkdir(parents=True, exist_ok=True)
        facts = retriever._build_index(index_dir, progress)
        manifest = {
            "backend": cls.backend,
            "corpus_path": str(Path(corpus_path).resolve()),
            "corpus_fingerprint": fingerprint,
            "count": len(retriever.corpus),
            "build_seconds": round(time.perf_counter() - start, 3),
            **retriever.manifest_expectations(),
            **facts,
        }
        (index_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return retriever

    @classmethod
    def open(cls, corpus_path: str | Path, index_dir: str | Path, progress: bool = False, **options: Any):
        """Opens a built index after checking its manifest against the corpus and the options."""
        index_dir = Path(index_dir)
        manifest_path = index_dir / MANIFEST
        if not manifest_path.is_file():
            raise IndexMismatchError(f"{index_dir}: no {MANIFEST}; build the index first (python "
                                     "recipes/build_index.py ...)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("backend") != cls.backend:
            raise IndexMismatchError(f"{index_dir} is a {manifest.get('backend')!r} index, not {cls.backend!r}")
        corpus, fingerprint = read_corpus(corpus_path, progress=progress)
        if manifest.get("corpus_fingerprint") != fingerprint:
            raise IndexMismatchError(
                f"{index_dir} was built from another corpus ({manifest.get('corpus_path')}, sha256 "
                f"{str(manifest.get('corpus_fingerprint'))[:12]}...) than {corpus_path} (sha256 {fingerprint[:12]}...): "
                "rebuild the index"
            )
        retriever = cls(corpus, options)
        for key, wanted in retriever.manifest_expectations().items():
            if manifest.get(key) != wanted:
                raise IndexMismatchError(f"{index_dir} was built with {key}={manifest.get(key)!r}, but this "
                                         f"retriever is configured with {key}={wanted!r}: rebuild or reconfigure")
        retriever._load_index(index_dir)
        return retriever

    @classmethod
    def open_or_build(cls, corpus_path: str | Path, index_dir: str | Path, **options: Any):
        """Opens the index in ``index_dir``, or builds it there when it is missing or was built from another corpus
        or with other options. An index of another backend is never overwritten (its :class:`IndexMismatchError`
        is raised)."""
        manifest = Path(index_dir) / MANIFEST
        if manifest.is_file() and json.loads(manifest.read_text()).get("backend") != cls.backend:
            return cls.open(corpus_path, index_dir, **options)  # raises, naming both backends
        try:
            return cls.open(corpus_path, index_dir, **options)
        except IndexMismatchError:
            return cls.build(corpus_path, index_dir, progress=False, **options)

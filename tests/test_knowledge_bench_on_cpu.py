"""The knowledge benchmark's pieces: the clozes built from the toy world's gold chains, the answer check, and the
corpus-reading loop on the tiny model."""

import json
from argparse import Namespace

import pytest

from benchmarks.knowledge_bench import cloze_facts, known, main, read_corpus


def _corpus(toy_world_dir):
    with open(toy_world_dir / "corpus.jsonl") as f:
        return {doc["id"]: doc["contents"] for doc in map(json.loads, f)}


def test_every_cloze_is_its_passage_cut_just_before_the_answer(toy_world_dir):
    corpus = _corpus(toy_world_dir)
    rows = [json.loads(line) for line in open(toy_world_dir / "dev.jsonl")]
    facts = cloze_facts(rows, corpus)
    hops = {(hop["doc_id"], hop["answer"]) for row in rows for hop in row["chain"]}
    assert len(facts) == len(hops) and {(f["doc_id"], f["answer"]) for f in facts} == hops
    for fact in facts:
        passage = corpus[fact["doc_id"]]
        assert passage.startswith(fact["prompt"] + " " + fact["answer"])
        assert fact["answer"] not in fact["prompt"].split("\n", 1)[1]


def test_a_hop_whose_answer_is_only_in_the_title_is_left_out():
    corpus = {"city-1": '"Gibrux"\nA city.', "city-2": '"Cidra"\nCidra was founded by Fex Druji.'}
    rows = [{"chain": [{"doc_id": "city-1", "answer": "Gibrux"}, {"doc_id": "city-2", "answer": "Fex Druji"}]}]
    assert cloze_facts(rows, corpus) == [{"doc_id": "city-2", "prompt": '"Cidra"\nCidra was founded by',
                                          "answer": "Fex Druji"}]


def test_known_wants_the_whole_answer_first():
    assert known(" Fex Druji. Cidra", "Fex Druji") and known("Fex Druji", "Fex Druji")
    assert not known(" Fex Drujin", "Fex Druji") and not known(" the year", "Fex Druji")


def test_reading_a_small_corpus_teaches_the_tiny_model_its_facts(tiny_model_dir, tmp_path):
    corpus = {"city-2": '"Cidra"\nCidra was founded by Fex Druji.', "city-3": '"Susogeind"\nSusogeind lies in Jata.'}
    facts = cloze_facts([{"chain": [{"doc_id": "city-2", "answer": "Fex Druji"},
                                    {"doc_id": "city-3", "answer": "Jata"}]}], corpus)
    args = Namespace(model=tiny_model_dir, epochs=30, eval_every=30, batch=2, lr=3e-3, save_model=tmp_path / "reader")
    curve, _ = read_corpus(args, corpus, facts)
    assert (tmp_path / "reader" / "config.json").is_file() and (tmp_path / "reader" / "tokenizer.json").is_file()
    assert [row["epoch"] for row in curve] == list(range(31))
    assert curve[0]["recall"] == 0.0 and curve[-1]["recall"] == 1.0
    assert curve[-1]["loss"] < curve[1]["loss"]


def test_the_benchmark_names_a_missing_toy_world(tmp_path, tiny_model_dir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--toy", str(tmp_path / "nowhere"), "--model", str(tiny_model_dir), "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "nowhere/corpus.jsonl not found (make toy-world models)" in capsys.readouterr().err


def test_the_benchmark_refuses_a_negative_epoch_count(toy_world_dir, tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--toy", str(toy_world_dir), "--model", str(tiny_model_dir), "--out", str(tmp_path), "--epochs", "-1"])
    assert "--epochs must be >= 0" in capsys.readouterr().err


def test_zero_epochs_measures_the_model_as_it_is(toy_world_dir, tiny_model_dir, tmp_path):
    main(["--toy", str(toy_world_dir), "--model", str(tiny_model_dir), "--out", str(tmp_path), "--epochs", "0"])
    report = json.loads((tmp_path / "knowledge.json").read_text())
    assert [row["epoch"] for row in report["curve"]] == [0] and report["recall_after"] == report["recall_before"]
    assert report["facts"] > 0 and "| 0 | - |" in (tmp_path / "knowledge.md").read_text()


def test_a_bad_corpus_row_is_named_by_file_and_line(toy_world_dir, tiny_model_dir, tmp_path, capsys):
    toy = tmp_path / "toy"
    toy.mkdir()
    (toy / "dev.jsonl").write_text((toy_world_dir / "dev.jsonl").read_text())
    (toy / "corpus.jsonl").write_text('{"id": "a", "contents": "A."}\n{"id": "b"}\n')
    with pytest.raises(SystemExit):
        main(["--toy", str(toy), "--model", str(tiny_model_dir), "--out", str(tmp_path)])
    assert "corpus.jsonl:2: a row needs fields 'id' and 'contents'" in capsys.readouterr().err

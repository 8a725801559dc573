import json
import re

import pandas as pd
import pytest

from autocoa_verl.data.toy_world import CHAINS, RELATIONS, ToyWorld, ToyWorldConfig, build_toy_world, main
from autocoa_verl.protocol import passage_title_and_text


def _read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    config = ToyWorldConfig(seed=7, people=30, cities=8, orgs=8, regions=3, train=20, dev=5, test=5)
    build_toy_world(config, tmp_path / "a", progress=False)
    build_toy_world(config, tmp_path / "b", progress=False)
    for name in ("corpus.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = ToyWorldConfig(seed=8, people=30, cities=8, orgs=8, regions=3, train=20, dev=5, test=5)
    build_toy_world(other, tmp_path / "c", progress=False)
    assert (tmp_path / "a" / "corpus.jsonl").read_bytes() != (tmp_path / "c" / "corpus.jsonl").read_bytes()


def test_corpus_is_flashrag_format_with_unique_titles(toy_world_dir):
    corpus = _read_jsonl(toy_world_dir / "corpus.jsonl")
    assert len(corpus) == 40 + 10 + 10 + 4
    titles = set()
    for doc in corpus:
        assert set(doc) == {"id", "contents"}
        title, text = passage_title_and_text(doc["contents"])
        assert title and text.startswith(title)
        titles.add(title)
    assert len(titles) == len(corpus)


def test_search_questions_are_answered_by_their_gold_chain(toy_world_dir):
    docs = {d["id"]: d["contents"] for d in _read_jsonl(toy_world_dir / "corpus.jsonl")}
    questions = [q for split in ("train", "dev", "test") for q in _read_jsonl(toy_world_dir / f"{split}.jsonl")]
    searched = [q for q in questions if q["needs_search"]]
    assert {q["hops"] for q in searched} == {1, 2, 3}
    for q in searched:
        assert len(q["chain"]) == q["hops"]
        assert q["chain"][-1]["answer"] == q["golden_answers"][0]
        for step in q["chain"]:
            # the supporting passage states the sub-answer, and names the entity the query asks about
            assert step["answer"] in docs[step["doc_id"]], (q["id"], step)
            assert step["query"].split(" ")[0] in docs[step["doc_id"]]
        # the answer is never given away by the question (fictional names, so no prior knowledge helps)
        assert q["golden_answers"][0] not in q["question"]


def test_no_search_questions_are_answerable_from_the_question(toy_world_dir):
    questions = [q for split in ("train", "dev", "test") for q in _read_jsonl(toy_world_dir / f"{split}.jsonl")]
    plain = [q for q in questions if not q["needs_search"]]
    assert plain and all(q["hops"] == 0 and q["chain"] == [] for q in plain)
    for q in plain:
        arithmetic = re.fullmatch(r"What is (\d+) plus (\d+)\?", q["question"])
        if arithmetic:
            assert q["golden_answers"] == [str(int(arithmetic[1]) + int(arithmetic[2]))]
        else:
            assert q["golden_answers"][0] in q["question"]


def test_splits_are_disjoint_and_sized(toy_world_dir):
    splits = {s: _read_jsonl(toy_world_dir / f"{s}.jsonl") for s in ("train", "dev", "test")}
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 60, "dev": 10, "test": 20}
    texts = [q["question"] for rows in splits.values() for q in rows]
    assert len(set(texts)) == len(texts)
    manifest = json.loads((toy_world_dir / "manifest.json").read_text())
    assert manifest["test"]["questions"] == 20
    assert manifest["test"]["needs_search"] == sum(q["needs_search"] for q in splits["test"])


def test_parquet_loads_in_verl_rl_dataset(toy_world_dir, tiny_tokenizer):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    frame = pd.read_parquet(toy_world_dir / "test.parquet")
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 512, "filter_overlong_prompts": False,
                               "return_raw_chat": True, "truncation": "error"})
    dataset = RLHFDataset(str(toy_world_dir / "test.parquet"), tiny_tokenizer, config)
    item = dataset[0]
    first = _read_jsonl(toy_world_dir / "test.jsonl")[0]
    assert item["raw_prompt"][0]["content"].endswith(first["question"])
    assert list(item["reward_model"]["ground_truth"]["target"]) == first["golden_answers"]
    # each hop's gold answer reaches the loop (the world model's answer-bearing fidelity is per hop)
    assert list(item["extra_info"]["chain_answers"]) == [hop["answer"] for hop in first["chain"]]


def test_relations_and_chains_are_consistent():
    for chains in CHAINS.values():
        for chain in chains:
            for a, b in zip(chain, chain[1:]):
                assert RELATIONS[a].object == RELATIONS[b].subject, chain
                assert RELATIONS[a].noun_phrase is not None, chain


def test_question_text_reads_well():
    world = ToyWorld(ToyWorldConfig(seed=1, train=5, dev=0, test=0))
    q = world.chain_question(world.people[0], ("works_for", "headquarters", "region"))
    assert q["question"].startswith("In which region does the city where the organisation that ")
    assert "the the" not in q["question"]


def test_bad_sizes_are_rejected_and_cli_has_help(capsys):
    with pytest.raises(ValueError, match="people must be >= 2"):
        ToyWorldConfig(people=1)
    with pytest.raises(ValueError, match="no_search_fraction"):
        ToyWorldConfig(no_search_fraction=1.5)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--no-search-fraction" in capsys.readouterr().out

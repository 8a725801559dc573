import json

import pandas as pd
import pytest

from autocoa_verl.data.oracle import (PLANS, ROLLOUT_OBSERVATION_TOKENS, ROLLOUT_TOPK, Observations, main,
                                      no_search_thought, oracle_trajectory, write_oracle_parquet)
from autocoa_verl.data.sft_files import trajectory_text
from autocoa_verl.protocol import count_searches, get_preset
from autocoa_verl.reward import compute_score


def _rows(toy_world_dir, split="train"):
    return [json.loads(line) for line in open(toy_world_dir / f"{split}.jsonl")]


def _observe(bm25, tokenizer, preset="search_r1"):
    return Observations(bm25, tokenizer, preset)


def _texts(observe, row):
    return [text for text, _ in observe([step["query"] for step in row["chain"]])]


@pytest.mark.parametrize("preset,plan", [("search_r1", "state"), ("autocoa", "state"), ("search_r1", "count")])
def test_every_oracle_trajectory_scores_correct_and_well_formed(toy_world_dir, bm25, tiny_tokenizer, preset, plan):
    p = get_preset(preset)
    observe = _observe(bm25, tiny_tokenizer, preset)
    for row in _rows(toy_world_dir):
        segments = oracle_trajectory(row, _texts(observe, row), preset, plan)
        text = trajectory_text(segments)
        score = compute_score("toy_world", text, row["golden_answers"], preset=preset)
        assert (score["em"], score["format_ok"]) == (1.0, 1.0), (row["id"], text)
        assert count_searches(text, preset) == row["hops"]
        for s in segments:
            if s["source"] == "model":
                assert p.observation_open not in s["text"]
            else:
                assert s["text"].strip().startswith(p.observation_open)
                assert s["text"].strip().endswith(p.observation_close)


def test_observations_are_the_retrievers_top_k_not_the_gold_passage_alone(toy_world_dir, bm25, tiny_tokenizer):
    row = next(r for r in _rows(toy_world_dir) if r["hops"] == 1)
    (text, ids), = _observe(bm25, tiny_tokenizer)([row["chain"][0]["query"]])
    assert ids == [d["id"] for d in bm25.batch_search([row["chain"][0]["query"]], topk=3)[0]]
    assert len(ids) == 3 and text.count("Doc ") == 3


def test_oracle_observation_equals_the_loops_retriever_observation_token_for_token(toy_world_dir, bm25, bm25_server,
                                                                                   tiny_tokenizer):
    """The oracle's SFT trajectory, tokenised the way the SFT dataset does, is exactly the response the agent loop
    builds when the model writes the oracle's turns against the retriever server (the RL config's defaults)."""
    from autocoa_verl.agent.standalone import compose_rl_config
    from autocoa_verl.sft.dataset import encode_segments
    from tests.agent.test_coa_loop_on_cpu import real, run_loop

    coa = compose_rl_config([]).coa
    assert (ROLLOUT_TOPK, ROLLOUT_OBSERVATION_TOKENS) == (coa.retriever.topk, coa.max_observation_tokens)
    observe = _observe(bm25, tiny_tokenizer)
    for hops in (1, 2, 3):
        row = next(r for r in _rows(toy_world_dir) if r["hops"] == hops)
        segments = oracle_trajectory(row, _texts(observe, row))
        turns = [s["text"] for s in segments if s["source"] == "model"]
        output, _ = run_loop(tiny_tokenizer, turns, real(bm25_server.url))
        ids, mask = encode_segments(tiny_tokenizer, segments)
        assert output.response_ids == ids
        assert output.response_mask == mask
        assert output.extra_fields["coa_observation_sources"] == ["real"] * hops


def test_arithmetic_questions_carry_their_working():
    assert no_search_thought({"question": "What is 6 plus 24?", "kind": "arithmetic"}) == \
        "6 plus 24: 6 + 20 = 26, 26 + 4 = 30. No search is needed."
    assert no_search_thought({"question": "What is 13 plus 20?", "kind": "arithmetic"}) == \
        "13 plus 20: 13 + 20 = 33. No search is needed."
    assert no_search_thought({"question": "What is 13 plus 7?", "kind": "arithmetic"}) == \
        "13 plus 7: 13 + 7 = 20. No search is needed."
    assert "no search is needed" in no_search_thought({"question": "A has a cat named B. What is ...?",
                                                       "kind": "stated"})


def test_questions_whose_gold_passage_is_not_retrieved_are_left_out(toy_world_dir, bm25, tiny_tokenizer, tmp_path):
    class Blind(Observations):  # a retriever that never returns the gold passage of the first question's hops
        def __call__(self, queries):
            return [(text, [i for i in ids if i not in hidden]) for text, ids in super().__call__(queries)]

    rows = _rows(toy_world_dir, "dev")
    first = next(r for r in rows if r["needs_search"])
    hidden = {step["doc_id"] for step in first["chain"]}
    counts = write_oracle_parquet(toy_world_dir / "dev.jsonl", tmp_path / "o.parquet",
                                  Blind(bm25, tiny_tokenizer))
    written = set(pd.read_parquet(tmp_path / "o.parquet")["id"])
    assert first["id"] not in written
    assert counts["skipped"] >= 1 and counts["trajectories"] + counts["skipped"] == len(rows) == 10


def test_oracle_parquet_cli(toy_world_dir, tiny_model_dir, tmp_path, capsys):
    main([str(toy_world_dir / "dev.jsonl"), str(toy_world_dir / "corpus.jsonl"), str(tmp_path / "o.parquet"),
          "--tokenizer", str(tiny_model_dir)])
    frame = pd.read_parquet(tmp_path / "o.parquet")
    skipped = int(capsys.readouterr().out.split("; ")[-1].split()[0])
    assert len(frame) + skipped == 10 and len(frame) >= 8
    assert [m["role"] for m in frame.iloc[0]["messages"]] == ["user", "assistant"]
    assert (tmp_path / "bm25-index" / "manifest.json").is_file()


def test_oracle_refuses_questions_without_a_gold_chain(tmp_path, toy_world_dir, tiny_model_dir):
    src = tmp_path / "nq.jsonl"
    src.write_text(json.dumps({"id": "1", "question": "q?", "golden_answers": ["a"]}) + "\n")
    with pytest.raises(ValueError, match="has no gold 'chain'"):
        main([str(src), str(toy_world_dir / "corpus.jsonl"), str(tmp_path / "o.parquet"),
              "--tokenizer", str(tiny_model_dir)])


def test_oracle_pairs_prefer_search_exactly_when_the_question_needs_it(toy_world_dir, bm25, tiny_tokenizer):
    from autocoa_verl.data.oracle import answers_by_kind, distractor, oracle_pairs

    rows = _rows(toy_world_dir)
    pool = answers_by_kind(rows)
    observe = _observe(bm25, tiny_tokenizer)
    for row in rows:
        pairs = oracle_pairs(row, _texts(observe, row), distractor(row, pool))
        assert len(pairs) == max(1, row["hops"])
        for pair in pairs:
            chosen, rejected = trajectory_text(pair["chosen"]), trajectory_text(pair["rejected"])
            assert pair["chosen_acts"] == row["needs_search"]
            searcher, other = (chosen, rejected) if pair["chosen_acts"] else (rejected, chosen)
            assert count_searches(searcher) == 1 and count_searches(other) == 0
            # the branch that answers now: right when no search is needed, a wrong guess when it is
            em = compute_score("toy_world", trajectory_text(pair["prefix"]) + other, row["golden_answers"])["em"]
            assert em == (0.0 if row["needs_search"] else 1.0), (row["id"], other)


def test_oracle_cli_writes_pairs(toy_world_dir, tiny_model_dir, tmp_path):
    from autocoa_verl.data.sft_files import read_sft_parquet

    main([str(toy_world_dir / "dev.jsonl"), str(toy_world_dir / "corpus.jsonl"), str(tmp_path / "o.parquet"),
          "--pairs", str(tmp_path / "p.parquet"), "--tokenizer", str(tiny_model_dir)])
    pairs = read_sft_parquet(tmp_path / "p.parquet", "pairs")
    trajectories = read_sft_parquet(tmp_path / "o.parquet", "trajectories")
    assert len(trajectories) >= 8 and len(pairs) >= len(trajectories)
    assert {t["kind"] for t in trajectories} == {"coa", "cot"}


def test_state_plan_names_no_count_and_each_thought_carries_the_steps_left(toy_world_dir, bm25, tiny_tokenizer):
    row = next(r for r in _rows(toy_world_dir) if r["hops"] == 3)
    segments = oracle_trajectory(row, _texts(_observe(bm25, tiny_tokenizer), row))  # the default plan
    thoughts = [s["text"].split("</think>")[0].removeprefix("<think>") for s in segments if s["source"] == "model"]
    first, second, third, last = thoughts
    chain = row["chain"]
    aspects = [step["query"].removeprefix(prev["answer"]).strip() for prev, step in zip(chain, chain[1:])]
    assert first == f"I need to look up: {chain[0]['query']}, then {aspects[0]}, then {aspects[1]}."
    assert second == f"{chain[0]['query']}: {chain[0]['answer']}. Left: {aspects[0]}, then {aspects[1]}. " \
                     f"Next: {chain[1]['query']}."
    assert third == f"{chain[1]['query']}: {chain[1]['answer']}. Left: {aspects[1]}. Next: {chain[2]['query']}."
    assert last == f"{chain[2]['query']}: {row['golden_answers'][0]}. Nothing is left."
    assert not any(word in " ".join(thoughts) for word in ("1 search", "2 searches", "3 searches"))


def test_unknown_plan_is_refused():
    assert PLANS == ("state", "count")
    with pytest.raises(ValueError, match="plan 'counted'"):
        oracle_trajectory({"needs_search": True, "golden_answers": ["x"], "chain": []}, [], plan="counted")

import json

import pandas as pd
import pytest

from autocoa_verl.data.oracle import main, oracle_trajectory
from autocoa_verl.data.sft_files import trajectory_text
from autocoa_verl.protocol import count_searches, get_preset
from autocoa_verl.reward import compute_score


def _load(toy_world_dir):
    passages = {d["id"]: d["contents"] for d in map(json.loads, open(toy_world_dir / "corpus.jsonl"))}
    rows = [json.loads(line) for line in open(toy_world_dir / "train.jsonl")]
    return passages, rows


@pytest.mark.parametrize("preset", ["search_r1", "autocoa"])
def test_every_oracle_trajectory_scores_correct_and_well_formed(toy_world_dir, preset):
    passages, rows = _load(toy_world_dir)
    p = get_preset(preset)
    for row in rows:
        segments = oracle_trajectory(row, passages, preset)
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


def test_oracle_parquet_cli(toy_world_dir, tmp_path):
    main([str(toy_world_dir / "dev.jsonl"), str(toy_world_dir / "corpus.jsonl"), str(tmp_path / "o.parquet")])
    frame = pd.read_parquet(tmp_path / "o.parquet")
    assert len(frame) == 10
    assert [m["role"] for m in frame.iloc[0]["messages"]] == ["user", "assistant"]


def test_oracle_refuses_questions_without_a_gold_chain(tmp_path, toy_world_dir):
    src = tmp_path / "nq.jsonl"
    src.write_text(json.dumps({"id": "1", "question": "q?", "golden_answers": ["a"]}) + "\n")
    with pytest.raises(ValueError, match="has no gold 'chain'"):
        main([str(src), str(toy_world_dir / "corpus.jsonl"), str(tmp_path / "o.parquet")])


def test_oracle_pairs_prefer_search_exactly_when_the_question_needs_it(toy_world_dir):
    from autocoa_verl.data.oracle import answers_by_kind, distractor, oracle_pairs

    passages, rows = _load(toy_world_dir)
    pool = answers_by_kind(rows)
    for row in rows:
        pairs = oracle_pairs(row, passages, distractor(row, pool))
        assert len(pairs) == max(1, row["hops"])
        for pair in pairs:
            chosen, rejected = trajectory_text(pair["chosen"]), trajectory_text(pair["rejected"])
            assert pair["chosen_acts"] == row["needs_search"]
            searcher, other = (chosen, rejected) if pair["chosen_acts"] else (rejected, chosen)
            assert count_searches(searcher) == 1 and count_searches(other) == 0
            # the branch that answers now: right when no search is needed, a wrong guess when it is
            em = compute_score("toy_world", trajectory_text(pair["prefix"]) + other, row["golden_answers"])["em"]
            assert em == (0.0 if row["needs_search"] else 1.0), (row["id"], other)


def test_oracle_cli_writes_pairs(toy_world_dir, tmp_path):
    from autocoa_verl.data.sft_files import read_sft_parquet

    main([str(toy_world_dir / "dev.jsonl"), str(toy_world_dir / "corpus.jsonl"), str(tmp_path / "o.parquet"),
          "--pairs", str(tmp_path / "p.parquet")])
    pairs = read_sft_parquet(tmp_path / "p.parquet", "pairs")
    trajectories = read_sft_parquet(tmp_path / "o.parquet", "trajectories")
    assert len(trajectories) == 10 and len(pairs) >= 10
    assert {t["kind"] for t in trajectories} == {"coa", "cot"}

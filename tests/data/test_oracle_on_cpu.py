import json

import pandas as pd
import pytest

from autocoa_verl.data.oracle import main, oracle_trajectory, trajectory_text
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

"""SFT datasets: masks from segments on real tokenisation, for both tag presets, all three stages and the read
stage."""

import json

import pytest
import torch

from autocoa_verl.data.oracle import Observations, write_oracle_parquet
from autocoa_verl.data.sft_files import SFTFileError, write_sft_parquet
from autocoa_verl.protocol import build_prompt, get_preset
from autocoa_verl.sft.dataset import CorpusSFTDataset, PairSFTDataset, TrajectorySFTDataset, encode, prompt_ids
from retriever_server.corpus import CorpusError


@pytest.fixture(scope="module", params=["search_r1", "autocoa"])
def oracle_files(request, toy_world_dir, bm25, tiny_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"oracle-{request.param}")
    write_oracle_parquet(toy_world_dir / "train.jsonl", out / "traj.parquet",
                         Observations(bm25, tiny_tokenizer, request.param), pairs_path=out / "pairs.parquet")
    return request.param, out / "traj.parquet", out / "pairs.parquet"


def _spans(tokenizer, ids, mask, value):
    return tokenizer.decode([i for i, m in zip(ids.tolist(), mask.tolist()) if m == value])


def test_stage2_masks_observations_and_trains_the_rest(oracle_files, tiny_tokenizer):
    preset, traj, _ = oracle_files
    p = get_preset(preset)
    data = TrajectorySFTDataset(str(traj), tiny_tokenizer, {"max_length": 2048})
    row_index = next(i for i, r in enumerate(data.rows) if r["kind"] == "coa" and len(r["segments"]) > 3)
    row, item = data.rows[row_index], data[row_index]
    ids, mask = item["input_ids"], item["loss_mask"]
    head = prompt_ids(tiny_tokenizer, row["prompt"])
    assert ids[: len(head)].tolist() == head and not mask[: len(head)].any()
    model_text = "".join(s["text"] for s in row["segments"] if s["source"] == "model")
    env_text = "".join(s["text"] for s in row["segments"] if s["source"] == "env")
    assert _spans(tiny_tokenizer, ids, mask, 1) == model_text + tiny_tokenizer.eos_token
    assert tiny_tokenizer.decode(ids[len(head):].tolist()) == "".join(s["text"] for s in row["segments"]) + \
        tiny_tokenizer.eos_token
    trained_env = tiny_tokenizer.decode([i for i, m in zip(ids[len(head):].tolist(), mask[len(head):].tolist())
                                         if m == 0])
    assert trained_env == env_text and p.observation_open in env_text  # every observation token, and only those
    # token for token: segment by segment, as the agent loop appends them
    body = [t for s in row["segments"] for t in encode(tiny_tokenizer, s["text"])]
    expected = head + body + [tiny_tokenizer.eos_token_id]
    assert ids.tolist() == expected


def test_stage3_puts_observations_in_the_loss(oracle_files, tiny_tokenizer):
    _, traj, _ = oracle_files
    stage2 = TrajectorySFTDataset(str(traj), tiny_tokenizer, {"max_length": 2048})
    stage3 = TrajectorySFTDataset(str(traj), tiny_tokenizer, {"max_length": 2048, "observation_loss": True})
    i = next(i for i, r in enumerate(stage2.rows) if r["kind"] == "coa")
    head = len(prompt_ids(tiny_tokenizer, stage2.rows[i]["prompt"]))
    assert torch.equal(stage2[i]["input_ids"], stage3[i]["input_ids"])
    assert stage3[i]["loss_mask"][head:].all() and not stage3[i]["loss_mask"][:head].any()
    assert stage3[i]["loss_mask"].sum() > stage2[i]["loss_mask"].sum()
    cot = next(i for i, r in enumerate(stage2.rows) if r["kind"] == "cot")  # no observation: the same mask
    assert torch.equal(stage2[cot]["loss_mask"], stage3[cot]["loss_mask"])


def test_pairs_train_only_the_continuation(oracle_files, tiny_tokenizer):
    _, _, pairs = oracle_files
    data = PairSFTDataset(str(pairs), tiny_tokenizer, {"max_length": 2048})
    for index in range(len(data)):
        row, item = data.rows[index], data[index]
        shared = prompt_ids(tiny_tokenizer, row["prompt"]) + \
            [t for s in row["prefix"] for t in encode(tiny_tokenizer, s["text"])]
        for branch in ("chosen", "rejected"):
            ids, mask = item[branch]["input_ids"], item[branch]["loss_mask"]
            assert ids[: len(shared)].tolist() == shared and not mask[: len(shared)].any()
            assert _spans(tiny_tokenizer, ids, mask, 1) == "".join(s["text"] for s in row[branch])
        assert not torch.equal(item["chosen"]["input_ids"], item["rejected"]["input_ids"])


def test_right_padding_and_length_errors(oracle_files, tiny_tokenizer):
    _, traj, _ = oracle_files
    padded = TrajectorySFTDataset(str(traj), tiny_tokenizer, {"max_length": 2048, "pad_mode": "right"})[0]
    n = int(padded["attention_mask"].sum())
    assert padded["input_ids"].shape == padded["loss_mask"].shape == (2048,) and not padded["loss_mask"][n:].any()
    short = TrajectorySFTDataset(str(traj), tiny_tokenizer, {"max_length": 16})
    with pytest.raises(ValueError, match=rf"{traj}: row id '.+' has \d+ tokens, more than data.max_length=16"):
        short[0]
    cut = TrajectorySFTDataset(str(traj), tiny_tokenizer, {"max_length": 16, "truncation": "right"})[0]
    assert cut["input_ids"].shape == (16,)


def test_bad_rows_are_named_and_nothing_is_written(tmp_path):
    good = {"id": "a", "prompt": build_prompt("q?"), "segments": [{"source": "model", "text": "<answer>x</answer>"}],
            "kind": "cot"}
    bad = [dict(good, id="b", segments=[{"source": "tool", "text": "x"}]),
           dict(good, id="c", segments=[{"source": "model", "text": "x"}, {"source": "env", "text": "y"}]),
           dict(good, id="d", kind="other")]
    with pytest.raises(SFTFileError) as error:
        write_sft_parquet([good, *bad], tmp_path / "t.parquet", "trajectories")
    message = str(error.value)
    assert "3 bad row(s)" in message
    assert "row 1 (id 'b'): field 'segments'[0].source must be one of ('model', 'env')" in message
    assert "row 2 (id 'c'): field 'segments' must end with a model segment" in message
    assert "row 3 (id 'd'): field 'kind'" in message
    assert not (tmp_path / "t.parquet").exists()


def test_a_bad_file_is_refused_when_training_reads_it(tmp_path, tiny_tokenizer):
    import pandas as pd

    path = tmp_path / "p.parquet"
    row = {"id": "x", "prompt": build_prompt("q?"), "prefix": [], "chosen_acts": True,
           "chosen": [{"source": "model", "text": "<search> q </search>"}],
           "rejected": [{"source": "model", "text": "<search> q </search>"}]}
    pd.DataFrame([row]).to_parquet(path)
    with pytest.raises(SFTFileError, match=r"row 0 \(id 'x'\): fields 'chosen' and 'rejected' are identical"):
        PairSFTDataset(str(path), tiny_tokenizer, {})
    with pytest.raises(FileNotFoundError, match="no such SFT data file"):
        TrajectorySFTDataset(str(tmp_path / "missing.parquet"), tiny_tokenizer, {})


def test_the_read_stage_trains_every_passage_token(toy_world_dir, tiny_tokenizer):
    corpus = toy_world_dir / "corpus.jsonl"
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    data = CorpusSFTDataset(str(corpus), tiny_tokenizer, {"max_length": 512})
    assert len(data) == len(docs)
    for index in (0, len(docs) - 1):
        item = data[index]
        ids, mask = item["input_ids"].tolist(), item["loss_mask"].tolist()
        assert ids == encode(tiny_tokenizer, docs[index]["contents"]) + [tiny_tokenizer.eos_token_id]
        # verl shifts the mask onto the log-probs: every token is a target but the first, which nothing precedes
        assert mask == [0] + [1] * (len(ids) - 1)
    with pytest.raises(ValueError, match=rf"{corpus}: row id '{docs[0]['id']}' has \d+ tokens, more than "
                                         r"data.max_length=8"):
        CorpusSFTDataset(str(corpus), tiny_tokenizer, {"max_length": 8})[0]


def test_a_bad_corpus_row_is_named_by_file_and_line(tmp_path, tiny_tokenizer):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "contents": "\\"A\\"\\nA is a city."}\n{"id": "b"}\n')
    with pytest.raises(CorpusError, match=rf"{corpus}:2: a row needs fields 'id' and 'contents'"):
        CorpusSFTDataset(str(corpus), tiny_tokenizer, {})

"""The CoA loop on a real vLLM-CPU engine (the standalone adapter) against a real bm25 retriever server."""

import json

import pytest
from transformers import AutoTokenizer

from autocoa_verl.agent.standalone import LocalVLLMServer, StandaloneRollout, compose_rl_config
from autocoa_verl.protocol import build_prompt
from tests.agent.overfit import teach_one_search


@pytest.fixture(scope="module")
def question(toy_world_dir):
    rows = [json.loads(line) for line in open(toy_world_dir / "test.jsonl")]
    return next(row for row in rows if row["hops"] == 1)


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tiny_tokenizer, bm25, question, tmp_path_factory):
    """The tiny model taught one real trajectory (its observation is what bm25 returns), served by vLLM-CPU."""
    out = tmp_path_factory.mktemp("taught")
    response = teach_one_search(tiny_model_dir, tiny_tokenizer, bm25, question, out)
    server = LocalVLLMServer(out, max_model_len=1024)
    yield server, AutoTokenizer.from_pretrained(out), response
    server.shutdown()


def rollout(engine, question, overrides):
    server, tokenizer, _ = engine
    config = compose_rl_config(["actor_rollout_ref.rollout.response_length=256", *overrides])
    runner = StandaloneRollout(config, server, tokenizer, hf_model_type="qwen2")
    rows = [{"raw_prompt": build_prompt(question["question"])}] * 2
    return runner.run_sync(rows, validate=True), tokenizer  # validation: greedy


def test_real_engine_stops_at_the_tag_and_gets_the_retrievers_observation(engine, question, bm25_server):
    outputs, tokenizer = rollout(engine, question, [f"coa.retriever.url={bm25_server.url}"])
    taught = engine[2]
    for output in outputs:
        metrics = output.extra_fields["coa_metrics"]
        assert output.extra_fields["coa_outcome"] == "answer"
        assert (metrics["searches"], metrics["obs_real"], metrics["tokens_past_action"]) == (1, 1, 0)
        mask = output.response_mask
        first_env = mask.index(0)
        first_turn = tokenizer.decode(output.response_ids[:first_env])
        assert first_turn.endswith("</search>")  # generation paused right at the closing tag
        assert tokenizer.decode(output.response_ids) == taught
        # every observation token is masked 0, every model token 1
        env = [t for t, m in zip(output.response_ids, mask) if m == 0]
        assert tokenizer.decode(env) == taught[len(first_turn): taught.index("</information>") + len("</information>\n")]


def test_real_engine_as_its_own_world_model(engine, question):
    outputs, tokenizer = rollout(engine, question, ["coa.schedule.validation=simulated"])
    for output in outputs:
        metrics = output.extra_fields["coa_metrics"]
        assert metrics["obs_simulated"] == 1 and metrics["obs_real"] == 0
        env = tokenizer.decode([t for t, m in zip(output.response_ids, output.response_mask) if m == 0])
        assert env.startswith("\n<information>") and env.endswith("</information>\n")
        assert output.extra_fields["coa_outcome"] == "answer"

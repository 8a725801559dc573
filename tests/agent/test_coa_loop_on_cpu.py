"""The CoA agent loop, token by token, with a scripted fake of the model and a real bm25 retriever server."""

import asyncio
import copy
import functools

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from autocoa_verl.agent import fidelity
from autocoa_verl.agent.observers import close_shared_clients
from autocoa_verl.agent.standalone import build_agent_loop, compose_rl_config
from autocoa_verl.protocol import TRUNCATION_MARKER, build_prompt, get_preset, render_observation
from tests.agent.fakes import ScriptedServer
from retriever_server.serve import free_port

QUESTION = "Who founded the city where Arlo Venn was born?"


@functools.lru_cache(maxsize=1)
def _verl_config():
    return compose_rl_config()  # composed once: Hydra's compose of verl's whole PPO config takes ~0.4 s


def loop_config(*overrides: str):
    """The RL config with ``key=value`` overrides (values parsed as YAML), without composing again."""
    config = copy.deepcopy(_verl_config())
    for override in overrides:
        key, value = override.split("=", 1)
        OmegaConf.update(config, key, yaml.safe_load(value), force_add=False)
    return config


def run_loop(tokenizer, turns, overrides=(), preset="search_r1", honour_stops=True, logprobs=True,
             server_class=ScriptedServer, **fields):
    config = loop_config(f"coa.preset={preset}", *overrides)
    server = server_class(tokenizer, turns, honour_stops=honour_stops)
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": logprobs}

    async def go():  # verl's loop binds the running event loop when it is built, as in its worker
        loop = build_agent_loop(config, server, tokenizer, hf_model_type="qwen2")
        try:
            # bounded: a sample that waited on something that waits on it would hang the suite
            return await asyncio.wait_for(loop.run(params, raw_prompt=build_prompt(QUESTION, preset), **fields), 30)
        finally:
            await close_shared_clients()

    output = asyncio.run(go())
    assert server.turns == [], "the loop stopped before the script ended"
    return output, server


def spans(output):
    """(mask, token ids, log-probs) runs of the response, in order."""
    runs, ids, mask, lps = [], output.response_ids, output.response_mask, output.response_logprobs
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            runs.append((mask[start], ids[start:i], lps[start:i] if lps is not None else None))
            start = i
    return runs


def real(url, *more):
    return [f"coa.retriever.url={url}", "coa.retriever.max_retries=0", *more]


def test_answer_without_action_is_one_generation_all_mask_one(tiny_tokenizer):
    output, server = run_loop(tiny_tokenizer, ["<think>easy</think><answer>Quessly</answer>"])
    ids, lps = server.emitted[0]
    assert output.response_ids == ids and output.response_mask == [1] * len(ids)
    assert output.response_logprobs == lps
    assert output.extra_fields["coa_outcome"] == "answer"
    assert server.calls[0]["stop"] == ["</search>", "<information>", "</answer>"]
    assert server.calls[0]["prompt_ids"] == output.prompt_ids
    assert output.extra_fields["coa_metrics"]["searches"] == 0


@pytest.mark.parametrize("preset, search, answer", [
    ("search_r1", "<search> Arlo Venn </search>", "<answer>Mira Oltan</answer>"),
    ("autocoa", "<begin_search> Arlo Venn </end_search>", "So \\boxed{Mira Oltan}"),
])
def test_one_search_appends_a_real_observation_masked_zero(tiny_tokenizer, bm25, bm25_server, preset, search,
                                                           answer):
    output, server = run_loop(tiny_tokenizer, [f"<think>who?</think>{search}", answer], real(bm25_server.url),
                              preset=preset)
    p = get_preset(preset)
    (m1, t1, l1), (m0, obs, l0), (m2, t2, l2) = spans(output)
    assert (m1, m0, m2) == (1, 0, 1)
    assert (t1, l1) == server.emitted[0] and (t2, l2) == server.emitted[1]
    assert l0 == [0.0] * len(obs)
    text = tiny_tokenizer.decode(obs)
    assert text.startswith("\n" + p.observation_open) and text.endswith(p.observation_close + "\n")
    expected = [doc["contents"] for doc in bm25.batch_search(["Arlo Venn"], topk=3)[0]]
    assert text == render_observation(expected, preset)
    # the second generation continues from exactly prompt + turn + observation
    assert server.calls[1]["prompt_ids"] == output.prompt_ids + t1 + obs
    metrics = output.extra_fields["coa_metrics"]
    assert (metrics["searches"], metrics["obs_real"], metrics["generated_tokens"]) == (1, 1, len(t1) + len(t2))
    assert metrics["observation_tokens"] == len(obs) and metrics["env_latency_s"] > 0
    assert output.extra_fields["coa_observation_sources"] == ["real"]
    assert output.extra_fields["coa_outcome"] == "answer"


def test_many_searches_then_max_actions_ends_the_sample(tiny_tokenizer, bm25_server):
    turns = ["<search>Arlo Venn</search>", "<search>Quessly</search>", "<search>Mira Oltan</search>"]
    output, server = run_loop(tiny_tokenizer, turns, real(bm25_server.url, "coa.max_actions=2"))
    runs = spans(output)
    assert [m for m, _, _ in runs] == [1, 0, 1, 0, 1]
    assert [ids for m, ids, _ in runs if m == 1] == [ids for ids, _ in server.emitted]
    assert output.extra_fields["coa_outcome"] == "max_actions"
    assert output.extra_fields["coa_metrics"]["searches"] == 2
    assert output.num_turns == 1 + 3 + 2


def test_observation_is_cut_to_its_token_budget_with_a_marker(tiny_tokenizer, bm25_server):
    output, _ = run_loop(tiny_tokenizer, ["<search>Arlo Venn</search>", "<answer>x</answer>"],
                         real(bm25_server.url, "coa.max_observation_tokens=40"))
    obs = spans(output)[1][1]
    assert len(obs) <= 40
    assert tiny_tokenizer.decode(obs).endswith(TRUNCATION_MARKER + "</information>\n")
    assert output.extra_fields["coa_metrics"]["truncated_observations"] == 1


def test_response_length_ends_the_sample_cleanly(tiny_tokenizer, bm25_server):
    long = "<think>" + "hmm " * 400
    output, server = run_loop(tiny_tokenizer, [long], real(bm25_server.url,
                                                          "actor_rollout_ref.rollout.response_length=64"))
    assert len(output.response_ids) == 64 and server.calls[0]["max_tokens"] == 64
    assert output.extra_fields["coa_outcome"] == "length"
    # an observation bigger than what is left is cut (marker, closing tag) to fit, and the sample ends there
    output, _ = run_loop(tiny_tokenizer, ["<search>Arlo Venn</search>"],
                         real(bm25_server.url, "actor_rollout_ref.rollout.response_length=80"))
    assert len(output.response_ids) <= 80 and output.extra_fields["coa_outcome"] == "length"
    assert tiny_tokenizer.decode(spans(output)[1][1]).endswith(TRUNCATION_MARKER + "</information>\n")
    # ... and when not even the tags fit, no observation is written
    output, _ = run_loop(tiny_tokenizer, ["<search>Arlo Venn</search>"],
                         real(bm25_server.url, "actor_rollout_ref.rollout.response_length=20"))
    assert set(output.response_mask) == {1} and output.extra_fields["coa_outcome"] == "length"


def test_empty_query_gets_told_and_the_model_goes_on(tiny_tokenizer, bm25_server):
    output, _ = run_loop(tiny_tokenizer, ["<search>  </search>", "<answer>x</answer>"], real(bm25_server.url))
    runs = spans(output)
    assert [m for m, _, _ in runs] == [1, 0, 1]
    assert "Invalid search (empty_query)" in tiny_tokenizer.decode(runs[1][1])
    assert output.extra_fields["coa_malformed"] == ["empty_query"]
    assert output.extra_fields["coa_metrics"]["searches"] == 0


@pytest.mark.parametrize("turn, outcome, reason", [
    ("<search>Arlo Venn", "malformed", "unclosed_tag"),
    ("<think>I know</think><answer> </answer>", "malformed", "empty_answer"),
])
def test_unrecoverable_malformed_actions_end_the_sample(tiny_tokenizer, turn, outcome, reason):
    output, _ = run_loop(tiny_tokenizer, [turn])
    assert output.extra_fields["coa_outcome"] == outcome and output.extra_fields["coa_malformed"] == [reason]
    assert set(output.response_mask) == {1}


def test_forged_observation_stops_at_the_opening_tag(tiny_tokenizer):
    output, _ = run_loop(tiny_tokenizer, ["<think>I recall</think><information>Arlo was born in X</information>"])
    text = tiny_tokenizer.decode(output.response_ids)
    assert text.endswith("<information>") and "born in X" not in text
    assert output.extra_fields["coa_malformed"] == ["forged_observation"]


def test_tokens_past_the_action_tag_are_dropped_when_the_engine_ignores_stops(tiny_tokenizer, bm25_server):
    turns = ["<search>Arlo Venn</search><information>forged</information><answer>x</answer>", "<answer>y</answer>"]
    output, server = run_loop(tiny_tokenizer, turns, real(bm25_server.url), honour_stops=False)
    first = spans(output)[0][1]
    assert tiny_tokenizer.decode(first).endswith("</search>")
    assert "forged" not in tiny_tokenizer.decode(output.response_ids)
    assert output.extra_fields["coa_metrics"]["tokens_past_action"] == len(server.emitted[0][0]) - len(first)
    assert output.extra_fields["coa_metrics"]["tokens_past_action"] > 0
    assert output.response_logprobs[: len(first)] == server.emitted[0][1][: len(first)]


def test_retriever_failure_is_recorded_and_the_sample_carries_no_gradient(tiny_tokenizer):
    url = f"http://127.0.0.1:{free_port()}"
    output, _ = run_loop(tiny_tokenizer, ["<search>Arlo Venn</search>"], real(url, "coa.retriever.timeout_s=2"))
    assert output.extra_fields["coa_outcome"] == "env_failure" and output.extra_fields["coa_env_failed"]
    assert set(output.response_mask) == {0}
    assert "<information>" not in tiny_tokenizer.decode(output.response_ids)
    assert output.extra_fields["coa_metrics"]["retriever_failures"] == 1
    assert output.extra_fields["coa_malformed"][0].startswith("retriever_connection")


def test_world_model_writes_the_observation_with_the_policy_server(tiny_tokenizer):
    turns = ["<search>Arlo Venn</search>", "Doc 1: Arlo Venn was born in Quessly.</information> extra",
             "<answer>Quessly</answer>"]
    output, server = run_loop(tiny_tokenizer, turns, ["coa.schedule.kind=always_simulated"])
    (m1, t1, _), (m0, obs, l0), (m2, t2, _) = spans(output)
    open_ids = tiny_tokenizer.encode("\n<information>", add_special_tokens=False)
    wm_call = server.calls[1]
    assert wm_call["prompt_ids"] == output.prompt_ids + t1 + open_ids
    assert wm_call["stop"] == ["</information>"] and "logprobs" not in wm_call
    assert obs[: len(open_ids)] == open_ids and l0 == [0.0] * len(obs)
    assert tiny_tokenizer.decode(obs).endswith("born in Quessly.</information>\n")
    assert output.extra_fields["coa_observation_sources"] == ["simulated"]
    assert output.extra_fields["coa_metrics"]["obs_simulated"] == 1


def test_world_model_observation_is_capped_and_closed(tiny_tokenizer):
    turns = ["<search>Arlo Venn</search>", "Doc 1: " + "blah " * 200, "<answer>x</answer>"]
    output, _ = run_loop(tiny_tokenizer, turns, ["coa.schedule.kind=always_simulated",
                                                 "coa.max_observation_tokens=48"])
    obs = spans(output)[1][1]
    assert len(obs) <= 48
    assert tiny_tokenizer.decode(obs).endswith(TRUNCATION_MARKER + "</information>\n")
    assert output.extra_fields["coa_metrics"]["truncated_observations"] == 1


def test_the_schedule_picks_the_provider_by_training_step(tiny_tokenizer, bm25_server):
    sources = []
    for step in range(1, 7):
        output, _ = run_loop(tiny_tokenizer, ["<answer>x</answer>"],
                             real(bm25_server.url, "coa.schedule.kind=ratio", "coa.schedule.simulated_per_real=2"),
                             global_steps=np.int64(step))
        sources.append(output.extra_fields["coa_source"])
    assert sources == ["simulated", "simulated", "real"] * 2
    output, _ = run_loop(tiny_tokenizer, ["<answer>x</answer>"], ["coa.schedule.kind=ratio"], global_steps=4,
                         coa_validate=True)
    assert output.extra_fields["coa_source"] == "real"
    with pytest.raises(ValueError, match="needs the training step"):
        run_loop(tiny_tokenizer, [], ["coa.schedule.kind=staged"])


def test_no_logprobs_requested_gives_none(tiny_tokenizer):
    output, _ = run_loop(tiny_tokenizer, ["<answer>x</answer>"], logprobs=False)
    assert output.response_logprobs is None


def test_a_forced_assistant_prefix_is_prompt_and_completes_with_the_first_turn(tiny_tokenizer):
    output, server = run_loop(tiny_tokenizer, ["Mira Oltan</answer>"], assistant_prefix="<think>sure</think><answer>")
    assert output.extra_fields["coa_outcome"] == "answer"  # the forced opening tag and the turn made one answer
    assert tiny_tokenizer.decode(output.prompt_ids).endswith("<think>sure</think><answer>")
    assert tiny_tokenizer.decode(output.response_ids) == "Mira Oltan</answer>"
    assert output.response_mask == [1] * len(output.response_ids)
    with pytest.raises(ValueError, match="must not hold a complete action"):
        run_loop(tiny_tokenizer, [], assistant_prefix="<answer>x</answer>")


def test_no_script_of_model_turns_returns_more_than_the_response_length(tiny_tokenizer, bm25_server):
    """Property over many random scripts: every environment block (real observations, 'Invalid search' notes) is
    cut to the budget left, so a response never exceeds ``response_length`` (verl pads but never truncates)."""
    import random

    moves = ["<search></search>", "<search> Arlo Venn birthplace </search>", "<search> <search> x </search>",
             "<search> a very long query that goes past the limit </search>", "<think>let me think</think>",
             "I ramble on and on without any tag at all"]
    rng = random.Random(0)
    configs = {n: loop_config(*real(bm25_server.url, f"actor_rollout_ref.rollout.response_length={n}",
                                      "coa.max_query_chars=20")) for n in (16, 24, 40, 64, 96)}
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}
    outcomes = set()
    for _ in range(150):
        limit = rng.choice(list(configs))
        turns = [rng.choice(moves) for _ in range(rng.randint(0, 5))] + ["<answer>Quessly</answer>"]
        server = ScriptedServer(tiny_tokenizer, turns)

        async def go():
            loop = build_agent_loop(configs[limit], server, tiny_tokenizer, hf_model_type="qwen2")
            try:
                return await loop.run(dict(params), raw_prompt=build_prompt(QUESTION))
            finally:
                await close_shared_clients()

        output = asyncio.run(go())
        n = len(output.response_ids)
        assert n <= limit and len(output.response_mask) == n == len(output.response_logprobs), (turns, limit, n)
        outcomes.add(output.extra_fields["coa_outcome"])
    assert {"length", "answer"} <= outcomes  # the scripts reach the budget as well as the answer


def test_an_invalid_search_note_near_the_end_is_cut_to_the_budget(tiny_tokenizer, bm25_server):
    """The reported case (response_length=48: an empty search, then an answer, returned 59 tokens), at the edge:
    the note after an empty search must be cut to the tokens left."""
    output, _ = run_loop(tiny_tokenizer, ["<search></search>"],
                         real(bm25_server.url, "actor_rollout_ref.rollout.response_length=12"))
    assert len(output.response_ids) == 12 and output.extra_fields["coa_outcome"] == "length"
    assert output.response_mask[-1] == 0  # the cut block is the environment's


ROW = {"reward_model": {"ground_truth": {"target": ["Mira Oltan"]}},
       "extra_info": {"hops": 2, "chain_answers": ["Quessly", "Mira Oltan"]}}


def test_a_sampled_simulated_observation_is_checked_against_the_real_one(tiny_tokenizer, bm25, bm25_server):
    turns = ["<search>Arlo Venn</search>", "Doc 1: Arlo Venn was born in Quessly.</information>",
             "<answer>Quessly</answer>"]
    output, server = run_loop(tiny_tokenizer, turns, real(bm25_server.url, "coa.schedule.kind=always_simulated",
                                                          "coa.world_model.fidelity_sample=1.0"), **ROW)
    m = output.extra_fields["coa_metrics"]
    simulated_block = tiny_tokenizer.decode(spans(output)[1][1])
    assert "born in Quessly." in simulated_block  # the simulated block is what the response carries
    real_block = render_observation([doc["contents"] for doc in bm25.batch_search(["Arlo Venn"], topk=3)[0]])
    expected = fidelity.compare(fidelity.block_body(simulated_block, get_preset("search_r1")),
                                fidelity.block_body(real_block, get_preset("search_r1")), ["Quessly"])
    assert {key: m[key] for key in expected} == pytest.approx(expected)
    assert m["fidelity_answer_bearing"] == 1.0  # the first hop's gold answer, Quessly
    assert m["fidelity_real_calls"] == 1 and m["obs_simulated"] == 1 and m["obs_real"] == 0
    assert m["simulated_tokens"] == len(spans(output)[1][1]) and len(server.calls) == 3


@pytest.mark.parametrize("determinism", [False, True])  # the probe runs beside the sample, or inline
def test_a_sampled_real_observation_gets_a_world_model_probe_that_is_not_appended(tiny_tokenizer, bm25_server,
                                                                                  determinism):
    turns = ["<search>Arlo Venn</search>", "Doc 1 (\"Nowhere\"): made up.</information>", "<answer>x</answer>"]
    output, server = run_loop(tiny_tokenizer, turns, real(bm25_server.url, "coa.world_model.probe_sample=1.0",
                                                          f"actor_rollout_ref.rollout.full_determinism={determinism}"),
                              **ROW)
    m = output.extra_fields["coa_metrics"]
    assert output.extra_fields["coa_observation_sources"] == ["real"]
    assert "made up" not in tiny_tokenizer.decode(output.response_ids)
    assert server.calls[1]["stop"] == ["</information>"]  # the probe: the world model's call
    assert m["fidelity_checked"] == 1 and m["fidelity_answer_bearing"] == 0.0 and m["fidelity_probe_tokens"] > 0
    assert m["fidelity_real_calls"] == 0 and m["obs_real"] == 1


class ProbeWaitsForTheNextTurn(ScriptedServer):
    """The world model's probe answers only once the sample has asked for its next turn: a probe that held up its
    sample would never finish."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.next_turn = asyncio.Event()

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        probe = sampling_params.get("stop") == ["</information>"]
        if not probe and self.calls:
            self.next_turn.set()
        output = await super().generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs)
        if probe:
            await self.next_turn.wait()
        return output


def test_a_fidelity_check_runs_beside_its_sample_and_its_metrics_still_count(tiny_tokenizer, bm25_server):
    turns = ["<search>Arlo Venn</search>", "Doc 1: Arlo Venn was born in Quessly.</information>",
             "<answer>x</answer>"]
    output, _ = run_loop(tiny_tokenizer, turns, real(bm25_server.url, "coa.world_model.probe_sample=1.0"),
                         server_class=ProbeWaitsForTheNextTurn, **ROW)
    m = output.extra_fields["coa_metrics"]
    assert output.extra_fields["coa_outcome"] == "answer"  # and run_loop checked that every scripted turn was played
    assert m["fidelity_checked"] == 1 and m["fidelity_answer_bearing"] == 1.0 and m["fidelity_probe_tokens"] > 0


def test_unsampled_observations_are_not_checked_and_a_failed_real_fetch_skips_the_check(tiny_tokenizer):
    turns = ["<search>Arlo Venn</search>", "Doc 1: x.</information>", "<answer>x</answer>"]
    output, _ = run_loop(tiny_tokenizer, turns, ["coa.schedule.kind=always_simulated",
                                                 "coa.world_model.fidelity_sample=0.0"])
    assert output.extra_fields["coa_metrics"]["fidelity_checked"] == 0
    dead = f"http://127.0.0.1:{free_port()}"
    output, _ = run_loop(tiny_tokenizer, turns, real(dead, "coa.schedule.kind=always_simulated",
                                                     "coa.world_model.fidelity_sample=1.0"))
    m = output.extra_fields["coa_metrics"]
    assert m["fidelity_checked"] == 0 and m["fidelity_real_calls"] == 1
    assert output.extra_fields["coa_outcome"] == "answer"  # the rollout itself never depended on it


def test_a_calibration_step_checks_its_simulated_observations_at_the_managers_share(tiny_tokenizer, bm25_server):
    turns = ["<search>Arlo Venn</search>", "Doc 1: Arlo Venn was born in Quessly.</information>",
             "<answer>Quessly</answer>"]
    config = real(bm25_server.url, "coa.schedule.kind=fidelity", "coa.world_model.fidelity_sample=0.0")
    plain, _ = run_loop(tiny_tokenizer, turns, config, global_steps=2, coa_source="simulated",
                        coa_fidelity_sample=None, **ROW)
    calibrating, _ = run_loop(tiny_tokenizer, turns, config, global_steps=2, coa_source="simulated",
                              coa_fidelity_sample=1.0, **ROW)
    assert plain.extra_fields["coa_metrics"]["fidelity_checked"] == 0
    m = calibrating.extra_fields["coa_metrics"]
    assert m["fidelity_checked"] == 1 and m["fidelity_real_calls"] == 1 and m["fidelity_answer_bearing"] == 1.0
    assert m["obs_simulated"] == 1 and m["obs_real"] == 0  # the real block was only compared


def test_the_fidelity_schedule_takes_the_managers_decision(tiny_tokenizer, bm25_server):
    output, _ = run_loop(tiny_tokenizer, ["<answer>x</answer>"], real(bm25_server.url, "coa.schedule.kind=fidelity"),
                         global_steps=3, coa_source="simulated")
    assert output.extra_fields["coa_source"] == "simulated"
    with pytest.raises(ValueError, match="decided per step by the agent-loop manager"):
        run_loop(tiny_tokenizer, [], ["coa.schedule.kind=fidelity"], global_steps=3)


class EngineDiesWhileProbing(ScriptedServer):
    """The world model's probe hangs, and the sample's next turn fails: the engine died under both."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.probe_cancelled = False

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        if sampling_params.get("stop") == ["</information>"]:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.probe_cancelled = True
                raise
        if self.calls:
            raise RuntimeError("engine died")
        return await super().generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs)


def test_a_sample_that_fails_cancels_its_fidelity_checks(tiny_tokenizer, bm25_server):
    config = loop_config("coa.preset=search_r1", *real(bm25_server.url, "coa.world_model.probe_sample=1.0"))
    server = EngineDiesWhileProbing(tiny_tokenizer, ["<search>Arlo Venn</search>"])

    async def go():
        loop = build_agent_loop(config, server, tiny_tokenizer, hf_model_type="qwen2")
        try:
            with pytest.raises(RuntimeError, match="engine died"):
                await asyncio.wait_for(loop.run({"temperature": 1.0, "logprobs": True},
                                                raw_prompt=build_prompt(QUESTION, "search_r1"), **ROW), 30)
            return server.probe_cancelled  # read before asyncio.run's own clean-up cancels what is left
        finally:
            await close_shared_clients()

    assert asyncio.run(go()), "the failed sample left its world-model probe running"

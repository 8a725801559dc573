"""The Chain-of-Action agent loop: verl generates until an action tag, the environment answers, verl continues.

Registered with verl through ``hydra_configs/agent_loops.yaml`` (``rollout.agent.agent_loop_config_path``) as
``coa_agent``; its settings live under the top-level ``coa:`` key of the RL config (``hydra_configs/rl_base.yaml``).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput

from autocoa_verl.agent import fidelity
from autocoa_verl.agent.observers import (Observation, ObservationBudgetError, RetrieverObserver,
                                          WorldModelObserver, shared_retriever_client, tokens_through)
from autocoa_verl.agent.schedule import ObservationSchedule
from autocoa_verl.protocol import (EMPTY_QUERY, FORGED_OBSERVATION, NESTED_TAG, QUERY_TOO_LONG, UNCLOSED_TAG,
                                   get_preset, parse_action)

# Malformed searches the model gets told about (in an observation block) and may retry; any other malformed action
# (unclosed tag, empty answer, a forged observation) ends the sample.
RETRYABLE = (EMPTY_QUERY, NESTED_TAG, QUERY_TOO_LONG)


@dataclass
class Trajectory:
    """The response as it is built: every token is appended together with its mask and log-prob."""

    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    sources: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRIC_KEYS, 0))
    outcome: str = ""
    # fidelity checks still running beside the sample (see CoAAgentLoop._observe)
    checks: list[asyncio.Task] = field(default_factory=list)

    def add_model(self, token_ids: list[int], logprobs: list[float] | None) -> None:
        self.response_ids += token_ids
        self.response_mask += [1] * len(token_ids)
        if self.logprobs is not None:
            if logprobs is None or len(logprobs) < len(token_ids):
                raise ValueError("the server returned fewer log-probs than tokens although log-probs were requested")
            self.logprobs += list(logprobs[: len(token_ids)])
        self.metrics["generated_tokens"] += len(token_ids)

    def add_env(self, token_ids: list[int]) -> None:
        self.response_ids += token_ids
        self.response_mask += [0] * len(token_ids)
        if self.logprobs is not None:
            self.logprobs += [0.0] * len(token_ids)
        self.metrics["observation_tokens"] += len(token_ids)


METRIC_KEYS = ("searches", "obs_real", "obs_simulated", "env_latency_s", "gen_latency_s", "generated_tokens",
               "observation_tokens", "truncated_observations", "malformed", "retriever_failures",
               "tokens_past_action", "length_limited", "answered", "turns", "real_latency_s", "simulated_latency_s",
               "simulated_tokens", "fidelity_checked", "fidelity_answer_bearing", "fidelity_token_f1",
               "fidelity_rouge_l", "fidelity_titles", "fidelity_hallucinated_titles", "fidelity_real_calls",
               "fidelity_real_latency_s", "fidelity_probe_tokens", "fidelity_latency_s")


def sampled(request_id: str, search_index: int, share: float) -> bool:
    """Whether a search's observation is checked for fidelity: a deterministic draw per (request, search).

    >>> [sampled("r", i, 0.0) for i in range(3)], all(sampled("r", i, 1.0) for i in range(3))
    ([False, False, False], True)
    """
    return share > 0 and zlib.crc32(f"{request_id}:{search_index}".encode()) / 2**32 < share


class CoAAgentLoop(AgentLoopBase):
    """Per sample: generate with stop strings at the closing action tag, the answer's closing tag and the *opening*
    observation tag; parse the turn with the protocol; on a search, append an observation (mask 0, log-prob 0) and
    continue; on an answer, EOS, a limit or an unrecoverable malformed action, stop.

    Defined outcomes (``extra_fields["coa_outcome"]``): ``answer``, ``no_action`` (EOS without an action),
    ``length`` (the response budget ran out; an observation cut by it is counted as truncated), ``max_actions``
    (a search beyond ``coa.max_actions``), ``malformed`` (unclosed tag at EOS, empty answer, forged observation),
    ``env_failure`` (the retriever failed after its retries: no observation is written, the sample ends at the
    action and its whole response mask is zeroed, so it carries no gradient; ``coa_env_failed`` marks it).
    Tokens generated past an action's closing tag (an engine that ignores stop strings) are dropped and counted.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        coa = self.config.coa
        self.preset = get_preset(coa.preset)
        self.max_actions = int(coa.max_actions)
        self.max_observation_tokens = int(coa.max_observation_tokens)
        self.max_query_chars = int(coa.max_query_chars)
        self.schedule = ObservationSchedule.from_config(coa.schedule)
        self.response_length = int(self.rollout_config.response_length)
        self.stops = self.preset.stop_strings()
        self.fidelity_sample, self.probe_sample = fidelity.shares(coa)
        # a fidelity check runs beside the sample, except under full determinism (its extra generation would change
        # the engine's batches from run to run, and verl then passes each request id to vLLM unchanged)
        self.checks_inline = bool(self.rollout_config.get("full_determinism", False))
        corpus = (coa.get("world_model") or {}).get("fidelity_corpus")
        self.known_titles = fidelity.corpus_titles(str(corpus)) if corpus else None

    def observer(self, source: str):
        coa = self.config.coa
        if source == "simulated":
            return WorldModelObserver(self.server_manager, self.tokenizer, self.preset, coa.world_model.temperature)
        options = {k: v for k, v in coa.retriever.items() if k not in ("url", "cost_per_call", "costly")}
        return RetrieverObserver(shared_retriever_client(coa.retriever.url, **options), self.tokenizer, self.preset)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        prompt_ids = await self.ct_build_initial_tokens(list(kwargs["raw_prompt"]))
        # a forced start of the assistant's turn (data synthesis branches with it): part of the prompt, and read
        # together with the first turn, so that e.g. a forced opening search tag and the generated query form one action
        forced = kwargs.get("assistant_prefix") or ""
        if forced:
            if parse_action(forced, self.preset).kind in ("search", "answer"):
                raise ValueError(f"assistant_prefix must not hold a complete action: {forced!r}")
            prompt_ids = prompt_ids + self.tokenizer.encode(forced, add_special_tokens=False)
        source = self.schedule.source(kwargs.get("global_steps"), bool(kwargs.get("coa_validate", False)),
                                      kwargs.get("coa_source"))
        observer = self.observer(source)
        self._row = kwargs  # its gold answers, read only by a fidelity check
        trajectory = Trajectory(logprobs=[] if sampling_params.get("logprobs") else None)
        request_id = uuid4().hex
        try:
            await self._play(trajectory, observer, prompt_ids, forced, request_id, sampling_params)
            await asyncio.gather(*trajectory.checks)  # their metrics are the sample's
        except BaseException:  # a failed or cancelled sample leaves no fidelity check running behind it
            for check in trajectory.checks:
                check.cancel()
            await asyncio.gather(*trajectory.checks, return_exceptions=True)
            raise
        if trajectory.outcome == "env_failure":
            trajectory.response_mask = [0] * len(trajectory.response_mask)
        trajectory.metrics["length_limited"] = int(trajectory.outcome == "length")
        trajectory.metrics["answered"] = int(trajectory.outcome == "answer")
        return self._output(prompt_ids, trajectory, source)

    async def _play(self, trajectory: Trajectory, observer, prompt_ids: list[int], forced: str, request_id: str,
                    sampling_params: dict[str, Any]) -> None:
        """Generates turn after turn, observing each search, until the sample has an outcome."""
        actions = 0
        while not trajectory.outcome:
            budget = self.response_length - len(trajectory.response_ids)
            if budget <= 0:
                trajectory.outcome = "length"
                break
            start = time.perf_counter()
            output = await self.server_manager.generate(
                request_id=request_id, prompt_ids=prompt_ids + trajectory.response_ids,
                sampling_params={**sampling_params, "stop": self.stops, "max_tokens": budget})
            trajectory.metrics["gen_latency_s"] += time.perf_counter() - start
            trajectory.metrics["turns"] += 1
            action = self._take_turn(trajectory, list(output.token_ids), output.log_probs, budget,
                                     forced if trajectory.metrics["turns"] == 1 else "")
            if trajectory.outcome:
                break
            if actions == self.max_actions:
                trajectory.outcome = "max_actions"
                break
            actions += 1
            if action.kind == "search":
                await self._observe(trajectory, observer, action.content, prompt_ids, request_id, sampling_params)
            else:  # a retryable malformed search: say what was wrong, masked like any observation
                self._append_env(trajectory, self.tokenizer.encode(self._invalid_block(action.reason),
                                                                   add_special_tokens=False))

    def _take_turn(self, trajectory: Trajectory, token_ids: list[int], logprobs, budget: int, forced: str = ""):
        """Appends one generated turn (cut just past its first action) and sets the outcome if the sample ends.
        ``forced``: text already in the prompt that this turn continues (it is parsed with the turn, not appended)."""
        text = self.tokenizer.decode(token_ids)
        action = parse_action(forced + text, self.preset, max_query_chars=self.max_query_chars)
        keep = len(token_ids)
        if action.kind in ("search", "answer") or action.reason in RETRYABLE:
            keep = tokens_through(self.tokenizer, token_ids, action.end - len(forced))
        elif action.reason == FORGED_OBSERVATION:
            keep = tokens_through(self.tokenizer, token_ids,
                                  action.end + len(self.preset.observation_open) - len(forced))
        trajectory.metrics["tokens_past_action"] += len(token_ids) - keep
        trajectory.add_model(token_ids[:keep], logprobs)
        hit_length = len(token_ids) >= budget
        if action.kind == "answer":
            trajectory.outcome = "answer"
        elif action.kind == "none":
            trajectory.outcome = "length" if hit_length else "no_action"
        elif action.kind == "malformed":
            trajectory.metrics["malformed"] += 1
            trajectory.malformed.append(action.reason)
            if action.reason == UNCLOSED_TAG and hit_length:
                trajectory.outcome = "length"
            elif action.reason not in RETRYABLE:
                trajectory.outcome = "malformed"
        return action

    async def _observe(self, trajectory: Trajectory, observer, query: str, prompt_ids: list[int], request_id: str,
                       sampling_params: dict[str, Any]) -> None:
        remaining = self.response_length - len(trajectory.response_ids)
        budget = min(self.max_observation_tokens, remaining)
        trajectory.metrics["searches"] += 1
        try:
            observation: Observation = await observer.observe(query, prompt_ids + trajectory.response_ids, budget,
                                                              request_id, sampling_params)
        except ObservationBudgetError:  # the budget cannot even hold the tags: the response length is spent
            trajectory.outcome = "length"
            return
        trajectory.metrics["env_latency_s"] += observation.latency_s
        if observation.error:
            trajectory.metrics["retriever_failures"] += 1
            trajectory.outcome = "env_failure"
            trajectory.malformed.append(f"retriever_{observation.error}: {observation.message}")
            return
        trajectory.sources.append(observation.source)
        trajectory.metrics[f"obs_{observation.source}"] += 1
        trajectory.metrics[f"{observation.source}_latency_s"] += observation.latency_s
        if observation.source == "simulated":
            trajectory.metrics["simulated_tokens"] += len(observation.token_ids)
        trajectory.metrics["truncated_observations"] += observation.truncated
        search_index = len(trajectory.sources) - 1
        # a calibration step (the fidelity schedule's, short of evidence) checks more of its simulated observations
        share = (max(self.fidelity_sample, self._row.get("coa_fidelity_sample") or 0.0)
                 if observation.source == "simulated" else self.probe_sample)
        if sampled(request_id, search_index, share):
            check = self._check_fidelity(trajectory.metrics, observation, query, prompt_ids + trajectory.response_ids,
                                         budget, request_id, sampling_params, search_index)
            if self.checks_inline:
                await check
            else:  # the sample goes on; its next turn and the check's generation share the engine's batches
                trajectory.checks.append(asyncio.ensure_future(check))
                await asyncio.sleep(0)  # the check's request goes out first, as it would inline
        self._append_env(trajectory, observation.token_ids)

    async def _check_fidelity(self, m: dict[str, float], observation: Observation, query: str, context: list[int],
                              budget: int, request_id: str, sampling_params: dict[str, Any],
                              search_index: int) -> None:
        """Gets the other source's observation for the same query and context (never appended) and adds the
        simulated one's fidelity against the real one to the sample's metrics ``m``; a failed real fetch, or a budget
        too small for a probe, skips the check."""
        other = "real" if observation.source == "simulated" else "simulated"
        try:
            counterpart = await self.observer(other).observe(query, context, budget, request_id, sampling_params)
        except ObservationBudgetError:
            return
        m["fidelity_latency_s"] += counterpart.latency_s
        if other == "real":
            m["fidelity_real_calls"] += 1
            m["fidelity_real_latency_s"] += counterpart.latency_s
        else:
            m["fidelity_probe_tokens"] += len(counterpart.token_ids)
        if counterpart.error:
            return
        simulated, real = (observation, counterpart) if other == "real" else (counterpart, observation)
        body = lambda o: fidelity.block_body(self.tokenizer.decode(o.token_ids), self.preset)  # noqa: E731
        try:
            answers = fidelity.hop_answers(*fidelity.gold_of_row(self._row), search_index)
        except ValueError:  # a row without usable gold answers: nothing can be answer-bearing
            answers = []
        for key, value in fidelity.compare(body(simulated), body(real), answers, self.known_titles).items():
            m[key] += value

    def _append_env(self, trajectory: Trajectory, token_ids: list[int]) -> None:
        """The one way an environment block enters the response: cut to the tokens left of ``response_length``
        (verl pads but never truncates), ending the sample with the ``length`` outcome when it is cut."""
        remaining = self.response_length - len(trajectory.response_ids)
        trajectory.add_env(token_ids[: max(0, remaining)])
        if len(token_ids) > remaining:
            trajectory.outcome = "length"

    def _invalid_block(self, reason: str) -> str:
        p = self.preset
        return f"\n{p.observation_open}Invalid search ({reason}); write {p.search_open} query {p.search_close}." \
               f"{p.observation_close}\n"

    def _output(self, prompt_ids: list[int], trajectory: Trajectory, source: str) -> AgentLoopOutput:
        m = trajectory.metrics
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=trajectory.response_ids,
            response_mask=trajectory.response_mask,
            response_logprobs=trajectory.logprobs,
            num_turns=1 + int(m["turns"]) + len(trajectory.sources),
            metrics=AgentLoopMetrics(generate_sequences=m["gen_latency_s"], tool_calls=m["env_latency_s"]),
            extra_fields={
                "coa_metrics": dict(m),
                "coa_outcome": trajectory.outcome,
                "coa_source": source,
                "coa_observation_sources": list(trajectory.sources),
                "coa_malformed": list(trajectory.malformed),
                "coa_env_failed": trajectory.outcome == "env_failure",
                "turn_scores": [],
                "tool_rewards": [],
            },
        )

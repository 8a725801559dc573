"""verl's agent-loop manager and worker, extended (not forked) for the CoA loop under the legacy trainer.

verl 0.9.1's legacy trainer (``trainer.use_v1=false``) puts the training step only in ``batch.meta_info`` and never
passes it to ``AgentLoopBase.run()``; the worker here copies it (and the validation flag) into every sample's fields,
as the v1 trainer already does, so the observation schedule can see it. The manager adds the loops' per-sample
``coa_metrics`` to the rollout's timing dict, which verl logs with every step (as ``timing_s/coa/...``).
Selected with ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=autocoa_verl.agent.manager.CoAAgentLoopManager``.
The private verl names this module relies on are listed, and tested, in ``autocoa_verl/verl_compat.py``.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Iterable

import numpy as np
import ray
from verl.experimental.agent_loop.agent_loop import AgentLoopManager, AgentLoopWorker
from verl.protocol import DataProto
from verl.utils.ray_utils import auto_await

import autocoa_verl.advantage  # noqa: F401  registers algorithm.adv_estimator=grpo_coa in the trainer process
from autocoa_verl.agent.schedule import FIDELITY_METRICS, ObservationSchedule, StepLedger, fidelity_decision

SUMMED = ("searches", "obs_real", "obs_simulated", "retriever_failures", "malformed", "truncated_observations",
          "tokens_past_action", "generated_tokens", "observation_tokens", "length_limited", "answered")
# what the step ledger keeps per step, to add up a run's environment costs
COSTS = ("real_calls", "simulated_observations", "simulated_tokens", "simulated_gen_s", "real_latency_s",
         "fidelity_real_calls", "probe_tokens")
LEDGER = "coa_ledger.json"


class CoAAgentLoopWorker(AgentLoopWorker):
    """Passes ``global_steps``, ``coa_validate`` and the manager's ``coa_source`` and ``coa_fidelity_sample`` (a
    calibration step's check share) from the batch's meta_info to every sample."""

    async def generate_sequences(self, batch: DataProto) -> DataProto:
        n = len(batch)
        batch.non_tensor_batch["global_steps"] = np.full(n, int(batch.meta_info.get("global_steps", -1)), dtype=object)
        batch.non_tensor_batch["coa_validate"] = np.full(n, bool(batch.meta_info.get("validate", False)), dtype=object)
        for key in ("coa_source", "coa_fidelity_sample"):  # the manager's decisions for the step (None: none made)
            batch.non_tensor_batch[key] = np.full(n, batch.meta_info.get(key), dtype=object)
        return await super().generate_sequences(batch)


def _total(rows: list[dict[str, float]], key: str) -> float:
    return float(sum(row.get(key, 0) for row in rows))


def aggregate_coa_metrics(per_sample: Iterable[dict[str, float] | None]) -> dict[str, float]:
    """Step metrics from the loops' per-sample ``coa_metrics``: a mean per sample of every key, totals of the counts,
    the environment latency per observation and the share of generated tokens.

    >>> aggregate_coa_metrics([{"searches": 2, "env_latency_s": 0.2, "obs_real": 2, "generated_tokens": 6,
    ...                         "observation_tokens": 4}, None])["coa/searches/mean"]
    2.0
    """
    rows = [row for row in per_sample if row]
    if not rows:
        return {}
    keys = sorted(set().union(*rows))
    out: dict[str, float] = {}
    for key in keys:
        values = np.array([float(row.get(key, 0)) for row in rows])
        out[f"coa/{key}/mean"] = float(values.mean())
        out[f"coa/{key}/max"] = float(values.max())
        if key in SUMMED:
            out[f"coa/{key}/total"] = float(values.sum())
    observations = sum(row.get("obs_real", 0) + row.get("obs_simulated", 0) for row in rows)
    if observations:
        out["coa/env_latency_s/per_observation"] = sum(row.get("env_latency_s", 0) for row in rows) / observations
    tokens = sum(row.get("generated_tokens", 0) + row.get("observation_tokens", 0) for row in rows)
    if tokens:
        out["coa/generated_token_share"] = sum(row.get("generated_tokens", 0) for row in rows) / tokens
    total = partial(_total, rows)
    checked = total("fidelity_checked")
    if checked:
        out["coa/fidelity/checked"] = checked
        for key in FIDELITY_METRICS:
            out[f"coa/fidelity/{key}"] = total(f"fidelity_{key}") / checked
        if total("fidelity_titles"):
            out["coa/fidelity/hallucinated_title_share"] = total("fidelity_hallucinated_titles") / total(
                "fidelity_titles")
    return out


def step_costs(per_sample: Iterable[dict[str, float] | None]) -> dict[str, float]:
    """A step's environment costs from the loops' per-sample ``coa_metrics``: real retriever calls and the seconds
    they took (the rollouts' and the fidelity checks'), simulated observations with their tokens and generation
    seconds, and the tokens of world-model probes on real steps.

    >>> step_costs([{"obs_real": 2, "real_latency_s": 0.1, "fidelity_real_calls": 1},
    ...             {"obs_simulated": 1, "simulated_tokens": 40, "simulated_latency_s": 3.0}])["real_calls"]
    3.0
    """
    rows = [row for row in per_sample if row]
    total = partial(_total, rows)
    return {"real_calls": total("obs_real") + total("fidelity_real_calls"),
            "simulated_observations": total("obs_simulated"), "simulated_tokens": total("simulated_tokens"),
            "simulated_gen_s": total("simulated_latency_s"),
            "real_latency_s": total("real_latency_s") + total("fidelity_real_latency_s"),
            "fidelity_real_calls": total("fidelity_real_calls"), "probe_tokens": total("fidelity_probe_tokens")}


def cost_report(costs: dict[str, float], cost_per_call: float, prefix: str) -> dict[str, float]:
    """Costs as logged metrics, with what simulating saved against an all-real run of the same rollouts: each
    simulated observation would have been one call costing ``cost_per_call`` and taking the measured mean seconds of
    a real call (0 where none was made). Time saved is negative where generating an observation is slower than the
    retriever, as it is for a local one.

    >>> r = cost_report({"real_calls": 2, "simulated_observations": 10, "simulated_tokens": 400,
    ...                  "simulated_gen_s": 30.0, "real_latency_s": 0.04, "fidelity_real_calls": 0}, 0.01, "coa/cost")
    >>> round(r["coa/cost/spent"], 4), round(r["coa/cost/saved"], 4), round(r["coa/cost/time_saved_s"], 4)
    (0.02, 0.1, -29.8)
    """
    per_call_s = costs["real_latency_s"] / costs["real_calls"] if costs["real_calls"] else 0.0
    out = {f"{prefix}/{key}": value for key, value in costs.items()}
    out[f"{prefix}/spent"] = costs["real_calls"] * cost_per_call
    out[f"{prefix}/saved"] = costs["simulated_observations"] * cost_per_call
    out[f"{prefix}/time_saved_s"] = costs["simulated_observations"] * per_call_s - costs["simulated_gen_s"]
    return out


class CoAAgentLoopManager(AgentLoopManager):
    """verl's manager with :class:`CoAAgentLoopWorker` workers and the CoA metrics in every step's log.

    Per training step it also records the step's source, measured fidelity and environment costs in a
    :class:`StepLedger` (``<trainer.default_local_dir>/coa_ledger.json``), logs the step's and the run's costs
    (``coa/cost/...``, ``coa/run_cost/...``; ``coa.retriever.cost_per_call`` prices a real call), and under
    ``coa.schedule.kind=fidelity`` decides each step's source from that ledger (into ``meta_info["coa_source"]``).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self.agent_loop_workers_class = ray.remote(CoAAgentLoopWorker)
        super().__init__(*args, **kwargs)
        coa = self.config.coa
        self.schedule = ObservationSchedule.from_config(coa.schedule)
        self.cost_per_call = float((coa.get("retriever") or {}).get("cost_per_call", 0.0) or 0.0)
        self.ledger_path = os.path.join(self.config.trainer.default_local_dir, LEDGER)
        self.ledger: StepLedger | None = None
        self._step: tuple[int, str, bool] | None = None

    @auto_await
    async def generate_sequences(self, prompts: DataProto) -> DataProto:
        self._step = None
        if not prompts.meta_info.get("validate", False) and "global_steps" in prompts.meta_info:
            step = int(prompts.meta_info["global_steps"])
            if self.ledger is None:  # the first step of this run (or of its resume): earlier records stay
                self.ledger = StepLedger.resume(self.ledger_path, step)
            source, calibrating = (fidelity_decision(self.schedule, self.ledger.history, step)
                                   if self.schedule.kind == "fidelity" else (self.schedule.source(step), False))
            prompts.meta_info["coa_source"] = source
            if calibrating:
                prompts.meta_info["coa_fidelity_sample"] = self.schedule.calibration_sample
            self._step = (step, source, calibrating)
        return await super().generate_sequences(prompts)

    def _performance_metrics(self, metrics: list[list[dict[str, str]]], output: DataProto) -> dict[str, float]:
        timing = super()._performance_metrics(metrics, output)
        per_sample = output.non_tensor_batch.get("coa_metrics", [])
        coa = aggregate_coa_metrics(per_sample)
        timing.update(coa)
        if self._step is not None and self.ledger is not None:
            step, source, calibrating = self._step
            fidelity = coa.get(f"coa/fidelity/{self.schedule.fidelity_metric}")
            costs = step_costs(per_sample)
            self.ledger.record(step, source=source, calibrating=calibrating, fidelity=fidelity,
                               fidelity_checked=int(coa.get("coa/fidelity/checked", 0)), **costs)
            timing.update(cost_report(costs, self.cost_per_call, "coa/cost"))
            timing.update(cost_report(self.ledger.totals(*COSTS), self.cost_per_call, "coa/run_cost"))
            timing["coa/schedule/simulated"] = float(source == "simulated")
            timing["coa/schedule/calibrating"] = float(calibrating)
        return timing

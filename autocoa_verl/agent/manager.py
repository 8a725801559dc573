"""verl's agent-loop manager and worker, extended (not forked) for the CoA loop under the legacy trainer.

verl 0.9.1's legacy trainer (``trainer.use_v1=false``) puts the training step only in ``batch.meta_info`` and never
passes it to ``AgentLoopBase.run()``; the worker here copies it (and the validation flag) into every sample's fields,
as the v1 trainer already does, so the observation schedule can see it. The manager adds the loops' per-sample
``coa_metrics`` to the rollout's timing dict, which verl logs with every step (as ``timing_s/coa/...``).
Selected with ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=autocoa_verl.agent.manager.CoAAgentLoopManager``.
The private verl names this module relies on are listed, and tested, in ``autocoa_verl/verl_compat.py``.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import ray
from verl.experimental.agent_loop.agent_loop import AgentLoopManager, AgentLoopWorker
from verl.protocol import DataProto

import autocoa_verl.advantage  # noqa: F401  registers algorithm.adv_estimator=grpo_coa in the trainer process

SUMMED = ("searches", "obs_real", "obs_simulated", "retriever_failures", "malformed", "truncated_observations",
          "tokens_past_action", "generated_tokens", "observation_tokens", "length_limited", "answered")


class CoAAgentLoopWorker(AgentLoopWorker):
    """Passes ``global_steps`` and ``coa_validate`` from the batch's meta_info to every sample."""

    async def generate_sequences(self, batch: DataProto) -> DataProto:
        n = len(batch)
        batch.non_tensor_batch["global_steps"] = np.full(n, int(batch.meta_info.get("global_steps", -1)), dtype=object)
        batch.non_tensor_batch["coa_validate"] = np.full(n, bool(batch.meta_info.get("validate", False)), dtype=object)
        return await super().generate_sequences(batch)


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
    return out


class CoAAgentLoopManager(AgentLoopManager):
    """verl's manager with :class:`CoAAgentLoopWorker` workers and the CoA metrics in every step's log."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.agent_loop_workers_class = ray.remote(CoAAgentLoopWorker)
        super().__init__(*args, **kwargs)

    def _performance_metrics(self, metrics: list[list[dict[str, str]]], output: DataProto) -> dict[str, float]:
        timing = super()._performance_metrics(metrics, output)
        timing.update(aggregate_coa_metrics(output.non_tensor_batch.get("coa_metrics", [])))
        return timing

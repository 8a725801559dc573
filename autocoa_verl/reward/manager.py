"""The verl reward manager for agent-model rollouts, plugged in through verl's importlib reward-manager source::

    reward.reward_manager.source=importlib
    reward.reward_manager.name=CoARewardManager
    reward.reward_manager.module.path=pkg://autocoa_verl.reward.manager

It scores the decoded response (observation blocks included; the scorer never reads an answer from inside one) with
the configured ``compute_score`` — ours unless ``reward.custom_reward_function`` names another — and adds the
protocol's per-sample metrics (searches written, format validity) to ``reward_extra_info`` so verl logs them.
"""

from __future__ import annotations

import inspect

from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.utils.reward_score import default_compute_score

from autocoa_verl.protocol import DEFAULT_PRESET, count_searches
from autocoa_verl.reward.compute_score import compute_score as coa_compute_score


class CoARewardManager(RewardManagerBase):
    """Scores one agent-model rollout at a time (verl's reward loop batches and parallelises the calls)."""

    def __init__(self, config, tokenizer, compute_score, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        if compute_score is None or compute_score is default_compute_score:
            compute_score = coa_compute_score
        self.compute_score = compute_score
        self.is_async = inspect.iscoroutinefunction(compute_score)
        fn_config = config.reward.get("custom_reward_function") or {}
        self.preset = (fn_config.get("reward_kwargs") or {}).get("preset", DEFAULT_PRESET)

    async def run_single(self, data: DataProto) -> dict:
        item = data[-1:][0]
        response_ids = item.batch["responses"]
        valid_length = int(item.batch["attention_mask"][-response_ids.shape[-1] :].sum())
        response = await self.loop.run_in_executor(
            None, lambda: self.tokenizer.decode(response_ids[:valid_length], skip_special_tokens=True)
        )
        kwargs = dict(
            data_source=item.non_tensor_batch["data_source"],
            solution_str=response,
            ground_truth=item.non_tensor_batch["reward_model"]["ground_truth"],
            extra_info=dict(item.non_tensor_batch.get("extra_info") or {}),
        )
        if self.is_async:
            result = await self.compute_score(**kwargs)
        else:
            result = await self.loop.run_in_executor(None, lambda: self.compute_score(**kwargs))
        extra = dict(result) if isinstance(result, dict) else {"score": float(result)}
        extra["num_searches"] = float(count_searches(response, self.preset))
        return {"reward_score": float(extra["score"]), "reward_extra_info": extra}

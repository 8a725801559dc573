"""GRPO for agent rollouts: a sample whose environment failed is out of its group's statistics.

A sample whose retriever failed after its retries carries an all-zero response mask (``CoAAgentLoop``'s
``env_failure`` outcome), so it takes no gradient itself. Under verl's ``grpo`` its reward 0 would still enter the
group's mean and std and skew the advantages of its siblings. ``grpo_coa`` computes each group's statistics over its
samples with a non-empty response mask only; otherwise it is verl's GRPO (``norm_adv_by_std_in_grpo`` as there, a
group of one gets mean 0 and std 1).

Registered through verl's ``register_adv_est`` hook as ``algorithm.adv_estimator=grpo_coa`` (``rl_base.yaml``);
this module is imported by :mod:`autocoa_verl.agent.manager`, which verl loads in the trainer process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est

NAME = "grpo_coa"


@register_adv_est(NAME)
def grpo_without_failed_samples(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: np.ndarray,
                                epsilon: float = 1e-6, config: Any = None,
                                **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome advantages (bs, response_length) and returns (the same), grouped by ``index`` (the prompt's uid).

    >>> rewards = torch.tensor([[0., 1.], [0., 0.], [0., 0.]])   # sample 2 failed: mask all 0
    >>> adv, _ = grpo_without_failed_samples(rewards, torch.tensor([[1, 1], [1, 1], [0, 0]]), np.array(["q"] * 3))
    >>> [round(float(a), 4) for a in adv[:, 0]]
    [0.7071, -0.7071, 0.0]
    """
    normalise = True if config is None else bool(config.get("norm_adv_by_std_in_grpo", True))
    scores = token_level_rewards.sum(dim=-1)
    valid = response_mask.sum(dim=-1) > 0
    advantages = torch.zeros_like(scores)
    groups: dict = {}
    for i, uid in enumerate(index.tolist()):
        if bool(valid[i]):
            groups.setdefault(uid, []).append(i)
    with torch.no_grad():
        for members in map(torch.tensor, groups.values()):
            group = scores[members]
            mean, std = (group.mean(), group.std()) if len(members) > 1 else (torch.tensor(0.0), torch.tensor(1.0))
            advantages[members] = (group - mean) / (std + epsilon) if normalise else group - mean
    advantages = advantages.unsqueeze(-1) * response_mask
    return advantages, advantages

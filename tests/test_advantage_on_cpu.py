"""grpo_coa: a failed sample is out of its group's statistics; otherwise it is verl's GRPO."""

import numpy as np
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, get_adv_estimator_fn

from autocoa_verl.advantage import NAME, grpo_without_failed_samples


def _rewards(scores, length=3):
    out = torch.zeros(len(scores), length)
    out[:, -1] = torch.tensor(scores)
    return out


def test_registered_with_verl():
    assert get_adv_estimator_fn(NAME) is grpo_without_failed_samples


def test_a_failed_sample_does_not_skew_its_siblings_by_hand():
    # group q: rewards 1, 0, 1 and a failed sample (reward 0, mask all 0); group r: 1, 1
    rewards = _rewards([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    mask = torch.ones(6, 3, dtype=torch.long)
    mask[3] = 0
    index = np.array(["q", "q", "q", "q", "r", "r"])
    adv, returns = grpo_without_failed_samples(rewards, mask, index)
    # over the three valid samples of q: mean 2/3, unbiased std sqrt(1/3)
    mean, std = 2 / 3, (1 / 3) ** 0.5
    expected = torch.tensor([(1 - mean) / std, (0 - mean) / std, (1 - mean) / std, 0.0, 0.0, 0.0])
    assert torch.allclose(adv[:, 0], expected, atol=1e-4) and torch.equal(adv, returns)
    assert torch.all(adv[3] == 0)
    # verl's grpo lets the failed sample's 0 into q's statistics: mean 1/2, and the siblings' advantages shift
    verl_adv, _ = compute_grpo_outcome_advantage(rewards, mask, index)
    assert not torch.allclose(verl_adv[[0, 1, 2], 0], expected[:3], atol=1e-3)


def test_without_failures_it_equals_verls_grpo():
    torch.manual_seed(0)
    rewards = _rewards(torch.randint(0, 2, (8,)).float().tolist(), length=4)
    mask = torch.ones(8, 4, dtype=torch.long)
    mask[2, 3] = 0  # partial masks (observation tokens) do not make a sample failed
    index = np.array(list("aabbccdd"))
    for normalise in (True, False):
        config = {"norm_adv_by_std_in_grpo": normalise}
        ours, _ = grpo_without_failed_samples(rewards, mask, index, config=config)
        theirs, _ = compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=normalise)
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_a_group_of_one_keeps_its_score_and_equal_rewards_give_zero():
    adv, _ = grpo_without_failed_samples(_rewards([1.0]), torch.ones(1, 3), np.array(["q"]))
    assert torch.allclose(adv, torch.ones(1, 3), atol=1e-5)  # verl's convention: mean 0, std 1
    adv, _ = grpo_without_failed_samples(_rewards([0.0, 0.0]), torch.ones(2, 3), np.array(["q", "q"]))
    assert torch.all(adv == 0)

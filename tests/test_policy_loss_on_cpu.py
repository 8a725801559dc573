"""Bypass mode (``algorithm.rollout_correction.bypass_mode``, our default) against verl's decoupled mode: the same
policy loss when the rollout engine's log-probs agree with the actor's, so skipping the recomputation is exact."""

import pytest
import torch
from omegaconf import open_dict
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils.config import omega_conf_to_dataclass

from autocoa_verl.agent.standalone import compose_rl_config


def actor_config(bypass: bool):
    config = compose_rl_config([f"algorithm.rollout_correction.bypass_mode={str(bypass).lower()}"])
    actor = config.actor_rollout_ref.actor
    if bypass:  # what verl's apply_bypass_mode does to the actor's policy-loss config
        with open_dict(actor):
            actor.policy_loss["rollout_correction"] = config.algorithm.rollout_correction
    return omega_conf_to_dataclass(actor), config


@pytest.mark.parametrize("gap", [0.0, 4e-5])  # identical, and the measured vLLM-CPU vs FSDP agreement
def test_bypass_loss_equals_the_recomputed_old_log_prob_loss(gap):
    torch.manual_seed(0)
    mask = torch.ones(4, 12)
    mask[1, 8:] = mask[3, 5:] = 0
    old = -torch.rand(4, 12) * 3  # the actor's recomputed log-probs (decoupled mode's "old")
    rollout = old + gap * torch.randn(4, 12)  # the engine's log-probs of the same tokens
    current = old + 0.05 * torch.randn(4, 12)  # the policy after part of an update
    advantages = torch.randn(4, 1).expand(4, 12) * mask
    decoupled_cfg, config = actor_config(False)
    bypass_cfg, _ = actor_config(True)
    # decoupled mode as our config has it: the PPO ratio against the recomputed old log-probs, no IS re-weighting
    correction = config.algorithm.rollout_correction
    assert correction.rollout_is is None and correction.rollout_rs is None
    decoupled, _ = get_policy_loss_fn("vanilla")(old_log_prob=old, log_prob=current, advantages=advantages,
                                                response_mask=mask, loss_agg_mode="token-mean", config=decoupled_cfg)
    bypass, _ = get_policy_loss_fn("bypass_mode")(old_log_prob=rollout, log_prob=current, advantages=advantages,
                                                 response_mask=mask, loss_agg_mode="token-mean", config=bypass_cfg)
    assert bypass.item() == pytest.approx(decoupled.item(), abs=1e-4)
    assert decoupled.abs().item() > 1e-3  # a loss that carries gradient, not a trivial zero


def test_bypass_is_the_default():
    assert compose_rl_config([]).algorithm.rollout_correction.bypass_mode is True

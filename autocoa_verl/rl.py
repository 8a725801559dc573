"""The RL stages' entry: the preflight checks (``rl_preflight.py``), then verl's ``run_ppo``.

The agent loop, reward manager, advantage estimator (``grpo_coa``), observation schedule and (on CPU) the rollout
replica all come in through verl's own hooks, named in ``hydra_configs/rl_base.yaml`` and the CPU platform.
"""

from __future__ import annotations

from omegaconf import DictConfig

from autocoa_verl.rl_preflight import preflight


def run_rl(config: DictConfig) -> None:
    """verl's ``main_ppo`` path (device fix-up, config validation, ``run_ppo`` with the legacy task runner)."""
    preflight(config)
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.main_ppo_v0 import TaskRunner
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=TaskRunner)

"""The RL stages' entry: the preflight checks (``rl_preflight.py``), then verl's ``run_ppo``.

The agent loop, reward manager, advantage estimator (``grpo_coa``), observation schedule and (on CPU) the rollout
replica all come in through verl's own hooks, named in ``hydra_configs/rl_base.yaml`` and the CPU platform.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig, open_dict

from autocoa_verl.rl_preflight import preflight


def join_running_cluster(config: DictConfig) -> bool:
    """Inside a Ray job (``RAY_ADDRESS`` set, as the job supervisor does) verl's ``ray.init`` joins that cluster, and
    Ray refuses resource counts there: ``ray_kwargs.ray_init.num_cpus`` / ``num_gpus`` (the CPU overlay sets both, for a
    cluster of its own) are dropped and the cluster's own are used. Returns whether it joins one."""
    if not os.environ.get("RAY_ADDRESS"):
        return False
    ray_init = config.ray_kwargs.ray_init
    with open_dict(ray_init):
        for key in ("num_cpus", "num_gpus"):
            if ray_init.get(key) is not None:
                print(f"[autocoa] joining the Ray cluster at RAY_ADDRESS: ray_kwargs.ray_init.{key}={ray_init[key]} "
                      "is left to the cluster", flush=True)
                ray_init[key] = None
    return True


def validate(config: DictConfig) -> None:
    """verl's own ``validate_config``, told (as ``main_ppo`` tells it) whether a reference model and a critic run."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def run_rl(config: DictConfig) -> None:
    """verl's ``main_ppo`` path (device fix-up, config validation, ``run_ppo`` with the legacy task runner)."""
    preflight(config)
    join_running_cluster(config)
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.main_ppo_v0 import TaskRunner
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    validate(config)
    run_ppo(config, task_runner_class=TaskRunner)

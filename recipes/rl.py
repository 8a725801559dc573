"""GRPO for the agent model on verl (legacy PPO trainer, our agent loop, reward manager and observation schedule).

Run: python recipes/rl.py --config-name rl_stage1|rl_stage2|rl_mixed [+platform=rl_cpu] actor_rollout_ref.model.path=...
     data.train_files=... coa.retriever.url=...
(``make rl-stage1`` / ``rl-stage2`` / ``rl`` fill these in; ``recipes/launch_rl.py`` submits the same command to a Ray
cluster.)
"""

import os

import hydra

from autocoa_verl.errors import user_errors


@hydra.main(config_path="pkg://hydra_configs", config_name="rl_stage2", version_base=None)
@user_errors
def main(config) -> None:
    if config.trainer.device == "cpu":
        # must happen before verl is imported: verl resolves its platform once per process
        os.environ.setdefault("VERL_PLATFORM", "cpu")
        # the CPU run declares logical GPUs to Ray, which refuses them when CUDA_VISIBLE_DEVICES lists none
        if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
            del os.environ["CUDA_VISIBLE_DEVICES"]
    from autocoa_verl.rl import run_rl

    run_rl(config)


if __name__ == "__main__":
    main()

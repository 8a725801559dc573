"""SFT with verl's SFTTrainer on our configs.

Run: torchrun --standalone --nproc_per_node=N recipes/sft.py [+platform=sft_cpu] data.train_files=... model.path=...
"""

import os

import hydra


@hydra.main(config_path="../hydra_configs", config_name="sft", version_base=None)
def main(config) -> None:
    if config.trainer.device == "cpu":
        # must happen before verl is imported: verl resolves its platform once per process
        os.environ.setdefault("VERL_PLATFORM", "cpu")
    from verl.trainer.sft_trainer import run_sft

    run_sft(config)


if __name__ == "__main__":
    main()

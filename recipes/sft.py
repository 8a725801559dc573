"""SFT with verl's SFTTrainer on our configs: the three AutoCoA stages, and the optional read stage before them.

Run: torchrun --standalone --nproc_per_node=N recipes/sft.py --config-name sft_{read,stage1,stage2,stage3} \
       [+platform=sft_cpu] data.train_files=... model.path=...
(``make sft-read`` / ``sft-stage1`` / ``sft-stage2`` / ``sft-stage3`` fill these in and chain the stages.)
"""

import os

import hydra

from autocoa_verl.errors import user_errors


@hydra.main(config_path="pkg://hydra_configs", config_name="sft_stage2", version_base=None)
@user_errors
def main(config) -> None:
    if config.trainer.device == "cpu":
        # must happen before verl is imported: verl resolves its platform once per process
        os.environ.setdefault("VERL_PLATFORM", "cpu")
    from autocoa_verl.sft.trainer import run_sft

    run_sft(config)


if __name__ == "__main__":
    main()

"""The three AutoCoA SFT stages on verl's ``SFTTrainer``.

Stages 2 and 3 are verl's trainer as is, with :class:`~autocoa_verl.sft.dataset.TrajectorySFTDataset` as
``data.custom_cls`` (the configs select it). Stage 1 is :class:`ContrastiveSFTTrainer`: the same trainer with the
contrastive loss swapped in (``autocoa.loss=contrastive``) and each pair laid out as two adjacent rows.
The private verl names this module relies on are listed, and tested, in ``autocoa_verl/verl_compat.py``.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from verl.trainer.sft_trainer import SFTTrainer
from verl.utils import tensordict_utils as tu

from autocoa_verl.errors import ConfigError
from autocoa_verl.sft.losses import PAIR_METRICS, contrastive_loss


class PairCollator:
    """Flattens ``{"chosen", "rejected"}`` items into rows ``[c0, r0, c1, r1, ...]`` for verl's collator."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self.collate([item[branch] for item in items for branch in ("chosen", "rejected")])


class ContrastiveSFTTrainer(SFTTrainer):
    """verl's SFT trainer with stage 1's loss. ``data.train_batch_size`` counts pairs; micro-batches (rows) must hold
    whole pairs, so ``data.micro_batch_size_per_gpu`` must be even and fixed-size batching is required."""

    def __init__(self, config):
        data = config.data
        problems = []
        if data.get("pad_mode", "no_padding") != "no_padding":
            problems.append(f"data.pad_mode must be no_padding (got {data.pad_mode})")
        if data.use_dynamic_bsz:
            problems.append("data.use_dynamic_bsz must be false (token-balanced batching would split pairs)")
        if data.micro_batch_size_per_gpu % 2:
            problems.append(f"data.micro_batch_size_per_gpu counts rows, two per pair: it must be even "
                            f"(got {data.micro_batch_size_per_gpu})")
        if problems:
            raise ValueError("SFT stage 1 (contrastive) config: " + "; ".join(problems))
        super().__init__(config)

    def _build_engine(self):
        super()._build_engine()
        self.loss_fn = partial(contrastive_loss, config=None, alpha=float(self.config.autocoa.alpha))
        self.training_client.set_loss_fn(loss_fn=self.loss_fn)
        train_batch = self.training_client.train_batch

        def train_batch_with_pair_metrics(data):
            # the loss's metrics come back as one value per micro-batch; verl's console logger prints scalars only
            output = train_batch(data)
            if output is not None:
                metrics = tu.get(output, "metrics")
                for key in PAIR_METRICS:
                    if key in metrics:
                        metrics[f"train/{key}"] = float(np.mean(metrics.pop(key)))
            return output

        self.training_client.train_batch = train_batch_with_pair_metrics

    def _build_dataloader(self):
        super()._build_dataloader()
        rows_per_dp = 2 * self.train_batch_size_per_dp
        if rows_per_dp % self.config.data.micro_batch_size_per_gpu:
            raise ValueError(f"SFT stage 1: {rows_per_dp} rows per data-parallel rank (2 x pairs) are not a multiple "
                             f"of data.micro_batch_size_per_gpu={self.config.data.micro_batch_size_per_gpu}")
        self.collate_fn = PairCollator(self.collate_fn)
        for loader in (self.train_dataloader, self.val_dataloader):
            if loader is not None:
                loader.collate_fn = self.collate_fn


TRAINERS = {"nll": SFTTrainer, "contrastive": ContrastiveSFTTrainer}


def check_layout(config, world_size: int) -> None:
    """Raises :class:`ConfigError` if ``data.train_batch_size`` does not split over ``world_size`` processes into
    whole micro-batches. verl's trainer gives each data-parallel rank ``train_batch_size // dp`` rows (dropping the
    remainder silently), and its engine asserts whole micro-batches only once the model has loaded.

    >>> from omegaconf import OmegaConf
    >>> check_layout(OmegaConf.create({"data": {"train_batch_size": 32, "micro_batch_size_per_gpu": 4}}), 8)
    >>> check_layout(OmegaConf.create({"data": {"train_batch_size": 32, "micro_batch_size_per_gpu": 8}}), 8)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    autocoa_verl.errors.ConfigError: data.train_batch_size=32 over 8 data-parallel ranks is 4 rows each, not a ...
    """
    dp = world_size // config.get("engine", {}).get("ulysses_sequence_parallel_size", 1)
    batch, micro = config.data.train_batch_size, config.data.micro_batch_size_per_gpu
    if batch % dp:
        raise ConfigError(f"data.train_batch_size={batch} does not divide over {dp} data-parallel ranks (verl would "
                          f"drop {batch % dp} rows a step)")
    if not config.data.get("use_dynamic_bsz", False) and (batch // dp) % micro:
        raise ConfigError(f"data.train_batch_size={batch} over {dp} data-parallel ranks is {batch // dp} rows each, "
                          f"not a multiple of data.micro_batch_size_per_gpu={micro}")


def run_sft(config) -> None:
    """verl's ``run_sft`` with the trainer that ``autocoa.loss`` names."""
    from verl.utils.distributed import destroy_global_process_group, initialize_global_process_group

    loss = config.autocoa.loss
    if loss not in TRAINERS:
        raise ValueError(f"autocoa.loss must be one of {sorted(TRAINERS)}, got {loss!r}")
    check_layout(config, int(os.environ.get("WORLD_SIZE", 1)))
    initialize_global_process_group()
    trainer = TRAINERS[loss](config=config)
    trainer.fit()
    destroy_global_process_group()


def latest_hf_checkpoint(checkpoint_dir: str | Path) -> Path:
    """The HF export of the last checkpoint verl saved in ``checkpoint_dir`` (what the next stage loads).

    Raises:
        FileNotFoundError: no finished checkpoint there.
    """
    checkpoint_dir = Path(checkpoint_dir)
    marker = checkpoint_dir / "latest_checkpointed_iteration.txt"
    if not marker.is_file():
        raise FileNotFoundError(f"{checkpoint_dir}: no finished verl checkpoint ({marker.name} is missing)")
    hf = checkpoint_dir / f"global_step_{marker.read_text().strip()}" / "huggingface"
    if not (hf / "config.json").is_file():
        raise FileNotFoundError(f"{hf}: no HF export (checkpoint.save_contents needs 'hf_model')")
    return hf


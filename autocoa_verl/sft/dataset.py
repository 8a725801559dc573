"""SFT datasets for verl's ``SFTTrainer`` (plugged in with ``data.custom_cls``): token masks from the segment
structure of each row, never from re-matching tag token sequences.

Every segment is tokenised on its own, exactly as the agent loop appends tokens at rollout time (model turns, then
observation blocks encoded separately), so the SFT model sees the token boundaries it will produce and receive.

- :class:`TrajectorySFTDataset` (stages 2 and 3): loss on model-written tokens and the end-of-turn token; observation
  tokens masked out (stage 2) or in the loss (stage 3, ``data.observation_loss=true``: the internal world model).
- :class:`PairSFTDataset` (stage 1): one item per contrastive pair, ``{"chosen": ..., "rejected": ...}``, each
  ``prompt + prefix + continuation`` with loss mask 1 on the continuation's model tokens only; the stage-1 trainer
  (:mod:`autocoa_verl.sft.trainer`) lays each pair out as two adjacent rows.
- :class:`CorpusSFTDataset` (the read stage, before stage 1): one item per passage of a FlashRAG corpus JSONL, its
  ``contents`` and the end-of-text token, every token in the loss: the model reads the world it will search.

A loss mask marks the tokens to predict: verl shifts it onto the log-probs, so a row's first token is never a
target (nothing precedes it in the row).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from autocoa_verl.data.sft_files import read_sft_parquet
from retriever_server.corpus import load_corpus


def encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def prompt_ids(tokenizer: Any, prompt: Sequence[dict]) -> list[int]:
    """The chat-templated prompt up to and including the assistant's turn header."""
    return encode(tokenizer, tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False))


def encode_segments(tokenizer: Any, segments: Sequence[dict], observation_loss: bool = False,
                    train: bool = True) -> tuple[list[int], list[int]]:
    """Token ids and loss mask of a segment list: model tokens get ``train``, observation tokens get
    ``train and observation_loss``."""
    ids, mask = [], []
    for segment in segments:
        piece = encode(tokenizer, segment["text"])
        on = train and (segment["source"] == "model" or observation_loss)
        ids += piece
        mask += [int(on)] * len(piece)
    return ids, mask


class _SegmentDataset(Dataset):
    """Shared reading, length handling and padding (verl's ``right`` and ``no_padding`` modes)."""

    fmt = ""

    def __init__(self, parquet_files: str | Sequence[str], tokenizer: Any, config: Any, processor: Any = None,
                 max_samples: int = -1):
        if isinstance(tokenizer, str):
            from verl.utils import hf_tokenizer

            tokenizer = hf_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        config = config or {}
        self.pad_mode = config.get("pad_mode", "no_padding")
        if self.pad_mode not in ("right", "no_padding"):
            raise ValueError(f"data.pad_mode must be 'right' or 'no_padding', got {self.pad_mode!r}")
        self.max_length = int(config.get("max_length", 1024))
        self.truncation = config.get("truncation", "error")
        if self.truncation not in ("error", "right"):
            raise ValueError(f"data.truncation must be 'error' or 'right' here (left would cut the prompt), "
                             f"got {self.truncation!r}")
        self.observation_loss = bool(config.get("observation_loss", False))
        files = [parquet_files] if isinstance(parquet_files, str) else list(parquet_files)
        self.rows = [dict(row, _file=str(path)) for path in files for row in self.read(path)]
        if max_samples and max_samples > 0:
            self.rows = self.rows[:max_samples]
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError("the tokenizer has no eos_token: the model could never learn to end its turn")

    def read(self, path: str) -> list[dict]:
        return read_sft_parquet(path, self.fmt)

    def __len__(self) -> int:
        return len(self.rows)

    def _tensors(self, ids: list[int], mask: list[int], row: dict) -> dict[str, torch.Tensor]:
        if len(ids) > self.max_length:
            if self.truncation == "error":
                raise ValueError(f"{row['_file']}: row id {row['id']!r} has {len(ids)} tokens, more than "
                                 f"data.max_length={self.max_length} (raise it, or set data.truncation=right)")
            ids, mask = ids[: self.max_length], mask[: self.max_length]
        n = len(ids)
        if self.pad_mode == "no_padding":
            return {"input_ids": torch.tensor(ids), "loss_mask": torch.tensor(mask), "position_ids": torch.arange(n)}
        pad = self.max_length - n
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return {"input_ids": torch.tensor(ids + [pad_id] * pad), "loss_mask": torch.tensor(mask + [0] * pad),
                "attention_mask": torch.tensor([1] * n + [0] * pad),
                "position_ids": torch.cat([torch.arange(n), torch.zeros(pad, dtype=torch.long)])}


class TrajectorySFTDataset(_SegmentDataset):
    """Trajectories-format rows -> ``input_ids``, ``loss_mask``, ``position_ids`` (+ ``attention_mask`` when right-
    padded). The loss covers model tokens, the closing end-of-turn token, and observations iff
    ``data.observation_loss``."""

    fmt = "trajectories"

    def encode_row(self, row: dict) -> tuple[list[int], list[int]]:
        head = prompt_ids(self.tokenizer, row["prompt"])
        body, body_mask = encode_segments(self.tokenizer, row["segments"], self.observation_loss)
        return head + body + [self.eos_id], [0] * len(head) + body_mask + [1]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index]
        return self._tensors(*self.encode_row(row), row)


class PairSFTDataset(_SegmentDataset):
    """Pairs-format rows -> ``{"chosen": tensors, "rejected": tensors}``; the loss mask marks the continuation's
    model tokens (what P(x), the mean token log-prob of the continuation, averages over)."""

    fmt = "pairs"

    def encode_branch(self, row: dict, branch: str) -> tuple[list[int], list[int]]:
        head = prompt_ids(self.tokenizer, row["prompt"])
        prefix, _ = encode_segments(self.tokenizer, row["prefix"], train=False)
        body, body_mask = encode_segments(self.tokenizer, row[branch])
        if not any(body_mask):
            raise ValueError(f"{row['_file']}: row id {row['id']!r}: the {branch} continuation has no model tokens")
        return head + prefix + body, [0] * (len(head) + len(prefix)) + body_mask

    def __getitem__(self, index: int) -> dict[str, dict[str, torch.Tensor]]:
        row = self.rows[index]
        return {branch: self._tensors(*self.encode_branch(row, branch), row) for branch in ("chosen", "rejected")}


class CorpusSFTDataset(_SegmentDataset):
    """FlashRAG corpus JSONL files (``{"id", "contents"}`` rows, validated by ``retriever_server.corpus``) ->
    one item per passage: ``contents`` + end-of-text, every token but the first a target (continued pretraining on
    the corpus, as ``benchmarks/knowledge_bench.py`` measures it)."""

    def read(self, path: str) -> list[dict]:
        return load_corpus(path)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index]
        ids = encode(self.tokenizer, row["contents"]) + [self.eos_id]
        return self._tensors(ids, [0] + [1] * (len(ids) - 1), row)

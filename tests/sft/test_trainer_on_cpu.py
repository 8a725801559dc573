"""Stage 1's trainer refuses, before any work, configs that would split a (chosen, rejected) pair."""

import pytest

from autocoa_verl.config import compose
from autocoa_verl.sft.trainer import ContrastiveSFTTrainer, PairCollator


def _stage1(*overrides):
    return compose("sft_stage1", overrides)


@pytest.mark.parametrize("override, message", [
    ("data.micro_batch_size_per_gpu=3", r"data.micro_batch_size_per_gpu counts rows, two per pair: it must be even"),
    ("data.use_dynamic_bsz=true", r"data.use_dynamic_bsz must be false"),
    ("data.pad_mode=right", r"data.pad_mode must be no_padding"),
])
def test_bad_stage1_configs_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        ContrastiveSFTTrainer(_stage1(override))


def test_pair_collator_lays_pairs_out_chosen_then_rejected():
    items = [{"chosen": "c0", "rejected": "r0"}, {"chosen": "c1", "rejected": "r1"}]
    assert PairCollator(list)(items) == ["c0", "r0", "c1", "r1"]

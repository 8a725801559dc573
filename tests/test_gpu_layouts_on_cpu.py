"""GPU-cluster layouts checked on CPU: every RL config composed for 1x8, 2x8 (rollout TP 2) and 4x8 (TP 4) GPUs passes
verl's own ``validate_config`` and our worker-level split check, with the overrides the README's multi-node section
gives; the SFT configs split over 8 GPUs. No Ray, no GPU."""

import pytest
from omegaconf import OmegaConf

from autocoa_verl.config import compose, config_dir
from autocoa_verl.errors import ConfigError
from autocoa_verl.rl import validate
from autocoa_verl.rl_preflight import RLConfigError, check_layout
from autocoa_verl.sft.trainer import check_layout as check_sft_layout

# the README's examples, word for word (test_the_readme_gives_each_layout checks)
LAYOUTS = {
    "1x8": "trainer.nnodes=1 trainer.n_gpus_per_node=8",
    "2x8-tp2": "trainer.nnodes=2 trainer.n_gpus_per_node=8 actor_rollout_ref.rollout.tensor_model_parallel_size=2",
    "4x8-tp4": "trainer.nnodes=4 trainer.n_gpus_per_node=8 actor_rollout_ref.rollout.tensor_model_parallel_size=4",
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", ["rl_stage1", "rl_stage2", "rl_mixed"])
def test_every_rl_config_passes_verls_checks_on_each_layout(name, layout):
    config = compose(name, LAYOUTS[layout].split())
    assert config.trainer.nnodes * config.trainer.n_gpus_per_node in (8, 16, 32)
    validate(config)
    check_layout(config)


def test_a_group_that_does_not_split_is_refused_with_the_field_named():
    """rollout.n=5: 16 x 5 = 80 sequences per mini-batch, 10 per GPU, not a multiple of 4. verl's validate_config
    lets it through; its workers would fail after Ray placed them and loaded the model."""
    config = compose("rl_stage2", ["trainer.n_gpus_per_node=8", "actor_rollout_ref.rollout.n=5"])
    validate(config)
    with pytest.raises(RLConfigError, match=r"ppo_mini_batch_size=16: x rollout.n=5 is 80 sequences .* 8 data-par"):
        check_layout(config)


def test_a_tensor_parallel_size_that_does_not_fit_a_node_is_refused():
    config = compose("rl_stage2", [*LAYOUTS["1x8"].split(), "actor_rollout_ref.rollout.tensor_model_parallel_size=3"])
    with pytest.raises(RLConfigError, match="tensor_model_parallel_size=3 does not divide trainer.n_gpus_per_node=8"):
        check_layout(config)


def test_dynamic_batch_sizes_skip_the_micro_batch_split():
    config = compose("rl_stage2", ["trainer.n_gpus_per_node=8", "actor_rollout_ref.rollout.n=5",
                                   "actor_rollout_ref.actor.use_dynamic_bsz=true"])
    check_layout(config)


def test_the_readme_gives_each_layout():
    readme = " ".join((config_dir().parent / "README.md").read_text().split())
    for layout, overrides in LAYOUTS.items():
        assert overrides in readme, f"README lacks the {layout} example: {overrides}"


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_the_sft_configs_split_over_eight_gpus(stage):
    config = compose(f"sft_stage{stage}")
    check_sft_layout(config, 8)
    with pytest.raises(ConfigError, match="does not divide over 12 data-parallel ranks"):
        check_sft_layout(config, 12)


@pytest.mark.parametrize("name, overlay, model", [("rl_stage2", "rl_sdpa", "actor_rollout_ref.model"),
                                                  ("sft_stage2", "sft_sdpa", "model")])
def test_the_sdpa_overlays_run_without_flash_attn_on_the_gpu_layouts(name, overlay, model):
    config = compose(name, [f"+platform={overlay}"])
    assert config.trainer.device == "cuda"
    assert OmegaConf.select(config, f"{model}.override_config.attn_implementation") == "sdpa"
    assert OmegaConf.select(config, f"{model}.use_remove_padding") is False

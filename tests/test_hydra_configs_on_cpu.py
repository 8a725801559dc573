"""Every YAML in hydra_configs/ composes against the pinned verl, and says what it should."""

import pytest
from omegaconf import OmegaConf

from autocoa_verl.config import compose, config_dir

CONFIG_DIR = config_dir()

# (primary config, overrides) -> covers these files
COMPOSITIONS = [
    ("sft_stage1", [], {"sft_stage1.yaml", "sft_base.yaml"}),
    ("sft_stage2", ["+platform=sft_cpu"], {"sft_stage2.yaml", "platform/sft_cpu.yaml"}),
    ("sft_stage3", ["+platform=sft_sdpa"], {"sft_stage3.yaml", "platform/sft_sdpa.yaml"}),
    ("sft_read", ["+platform=sft_cpu"], {"sft_read.yaml"}),
    ("rl_stage1", [], {"rl_stage1.yaml", "rl_base.yaml", "reward/coa.yaml"}),
    ("rl_stage2", ["+platform=rl_cpu"], {"rl_stage2.yaml", "platform/rl_cpu.yaml"}),
    ("rl_mixed", ["+platform=rl_sdpa"], {"rl_mixed.yaml", "platform/rl_sdpa.yaml"}),
    ("eval", [], {"eval.yaml"}),
    ("synthesis", ["teacher=/m", "questions=/q.jsonl", "out_dir=/o"], {"synthesis.yaml"}),
    ("retriever_server", [], {"retriever_server.yaml", "retriever/bm25.yaml"}),
    ("retriever_server", ["retriever=dense"], {"retriever/dense.yaml"}),
    ("retriever_server", ["retriever=flashrag", "retriever.options.flashrag_config.index_path=/idx"],
     {"retriever/flashrag.yaml"}),
]

# verl registry files (lists, loaded by verl itself), checked by test_agent_loop_registry
REGISTRIES = {"agent_loops.yaml"}


def test_every_config_file_is_composed_by_a_test():
    files = {str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml")}
    covered = set().union(*(c for _, _, c in COMPOSITIONS))
    assert files == covered | REGISTRIES


def test_agent_loop_registry_names_importable_loops_and_rl_base_uses_it():
    from hydra.utils import get_class
    from verl.experimental.agent_loop.agent_loop import AgentLoopBase
    from verl.utils.import_utils import load_class_from_fqn

    config = compose("rl_stage2", [])
    agent = config.actor_rollout_ref.rollout.agent
    # verl resolves the path against the working directory: the project root, where make and the recipes run
    entries = OmegaConf.load(CONFIG_DIR.parent / agent.agent_loop_config_path)
    assert [e.name for e in entries] == ["coa_agent"] and agent.default_agent_loop == "coa_agent"
    assert all(issubclass(get_class(e._target_), AgentLoopBase) for e in entries)
    from verl.experimental.agent_loop import AgentLoopManager

    assert issubclass(load_class_from_fqn(agent.agent_loop_manager_class, "AgentLoopManager"), AgentLoopManager)
    assert config.trainer.use_v1 is False


@pytest.mark.parametrize("name, overrides, _covers", COMPOSITIONS)
def test_config_composes_and_resolves(name, overrides, _covers):
    config = compose(name, overrides)
    OmegaConf.to_container(config, resolve=True)  # every interpolation resolves


def test_sft_cpu_overlay():
    config = compose("sft_stage2", ["+platform=sft_cpu"])
    assert config.trainer.device == "cpu"
    assert config.engine.strategy == "fsdp2"
    assert config.model.override_config.attn_implementation == "sdpa"
    assert config.engine.mixed_precision.param_dtype == "fp32"
    assert "hf_model" in config.checkpoint.save_contents
    assert compose("sft_stage2", []).trainer.device == "cuda"
    # one item per forward on CPU (no padding to the micro-batch's longest row): a trajectory, or stage 1's pair
    assert config.data.micro_batch_size_per_gpu == 1
    assert compose("sft_stage1", ["+platform=sft_cpu"]).data.micro_batch_size_per_gpu == 2
    assert compose("sft_stage2", []).data.micro_batch_size_per_gpu == 4


def test_sft_stages_differ_only_where_the_method_says():
    stage1, stage2, stage3 = (compose(f"sft_stage{i}", []) for i in (1, 2, 3))
    assert (stage1.autocoa.loss, stage2.autocoa.loss, stage3.autocoa.loss) == ("contrastive", "nll", "nll")
    assert stage1.autocoa.alpha == 0.2 and stage1.data.use_dynamic_bsz is False
    assert (stage1.data.custom_cls.name, stage2.data.custom_cls.name) == ("PairSFTDataset", "TrajectorySFTDataset")
    assert (stage2.data.observation_loss, stage3.data.observation_loss) == (False, True)
    assert stage2.data.custom_cls.path == "pkg://autocoa_verl.sft.dataset"


def test_the_read_stage_is_the_measured_reading_recipe():
    read = compose("sft_read", ["+platform=sft_cpu"])
    assert (read.autocoa.loss, read.data.custom_cls.name) == ("nll", "CorpusSFTDataset")
    # benchmarks/results/knowledge.md: 16 passages a step, constant lr 5e-4, no weight decay, 10 epochs
    assert (read.data.train_batch_size, read.trainer.total_epochs) == (16, 10)
    assert (read.optim.lr, read.optim.weight_decay, read.optim.lr_warmup_steps) == (5e-4, 0.0, 0)
    assert read.optim.lr_scheduler_type == "constant" and read.trainer.experiment_name == "sft_read"
    # its passages are short and alike: on CPU the whole batch is one forward (the other stages: one item)
    assert read.data.micro_batch_size_per_gpu == 16 and "hf_model" in read.checkpoint.save_contents


def test_rl_base_uses_grpo_and_our_reward():
    config = compose("rl_stage2", [])
    assert config.algorithm.adv_estimator == "grpo_coa"
    assert config.reward.reward_manager.source == "importlib"
    assert config.reward.reward_manager.module.path == "pkg://autocoa_verl.reward.manager"
    assert config.reward.custom_reward_function.path == "pkg://autocoa_verl.reward.compute_score"
    # verl's own reward fields are still there underneath ours
    assert config.reward.num_workers == 8


@pytest.mark.parametrize("name, cls", [("bm25", "BM25Retriever"), ("dense", "DenseRetriever"),
                                       ("flashrag", "FlashRAGRetriever")])
def test_ops_swap_the_retriever_with_one_override(name, cls):
    from retriever_server.serve import retriever_class

    config = compose("retriever_server", [f"retriever={name}", "retriever.options.flashrag_config.index_path=/i"]
                      if name == "flashrag" else [f"retriever={name}"])
    assert retriever_class(config.retriever).__name__ == cls
    assert config.index_dir == f"build/index/{name}"
    assert config.server.host == "127.0.0.1"


def test_rl_stages_differ_only_in_the_observation_schedule():
    stages = {name: compose(name, []) for name in ("rl_stage1", "rl_stage2", "rl_mixed")}
    kinds = {name: c.coa.schedule.kind for name, c in stages.items()}
    assert kinds == {"rl_stage1": "always_simulated", "rl_stage2": "always_real", "rl_mixed": "ratio"}
    assert stages["rl_mixed"].coa.schedule.simulated_per_real == 5  # the paper's 5:1
    assert stages["rl_stage1"].coa.schedule.validation == "simulated"  # stage 1 runs without a retriever
    same_name = ["trainer.experiment_name=x"]  # each stage names its run (and so its checkpoint dir)
    plain = {name: OmegaConf.to_container(compose(name, same_name), resolve=True) for name in stages}
    for c in plain.values():
        c.pop("coa")
    assert plain["rl_stage1"] == plain["rl_stage2"] == plain["rl_mixed"]
    # checkpoints carry an HF export for evaluation
    assert "hf_model" in stages["rl_stage2"].actor_rollout_ref.actor.checkpoint.save_contents


def test_rl_cpu_overlay():
    config = compose("rl_stage2", ["+platform=rl_cpu"])
    assert config.trainer.device == "cpu" and config.ray_kwargs.ray_init.num_gpus == 1
    rollout = config.actor_rollout_ref.rollout
    assert (rollout.name, rollout.enable_sleep_mode, rollout.free_cache_engine) == ("vllm", False, False)
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VLLM_TARGET_DEVICE == "cpu"
    assert config.actor_rollout_ref.actor.strategy == "fsdp2"
    assert config.actor_rollout_ref.actor.use_kl_loss  # the GPU runs' loss (the platform unpins the reference)
    assert rollout.engine_kwargs.vllm.block_size == 32  # whole-block prefix caching: less re-prefilled per turn
    assert compose("rl_stage2", []).trainer.device == "cuda"
    assert "block_size" not in compose("rl_stage2", []).actor_rollout_ref.rollout.engine_kwargs.vllm

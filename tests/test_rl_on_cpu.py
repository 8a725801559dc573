"""The RL entry's preflight: a run that cannot start says why before Ray and the engines start."""

import pytest

from autocoa_verl.agent.standalone import compose_rl_config
from autocoa_verl.agent.retriever_client import check_retriever
from autocoa_verl.rl_preflight import RLConfigError, needs_retriever, preflight


@pytest.fixture
def paths(tmp_path, tiny_model_dir):
    from autocoa_verl.data.qa_files import write_verl_parquet

    data = tmp_path / "train.parquet"
    write_verl_parquet([{"id": "1", "question": "Who?", "golden_answers": ["A"]}], data, "toy_world", "train")
    return [f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files={data}", f"data.val_files={data}"]


@pytest.mark.parametrize("name, overrides, expected", [
    ("rl_stage1", [], False),
    ("rl_stage1", ["trainer.test_freq=5", "coa.schedule.validation=real"], True),
    ("rl_stage2", [], True),
    # 5 simulated steps, the real one would be step 6; but by default a sample of the simulated observations is
    # also fetched real to measure the world model's fidelity
    ("rl_mixed", ["trainer.total_training_steps=5", "trainer.test_freq=-1"], True),
    ("rl_mixed", ["trainer.total_training_steps=5", "trainer.test_freq=-1", "coa.world_model.fidelity_sample=0"],
     False),
    ("rl_mixed", ["trainer.total_training_steps=5", "trainer.test_freq=-1", "coa.retriever.costly=true"], False),
    ("rl_stage1", ["coa.schedule.kind=fidelity"], True),  # the fidelity schedule starts real
    ("rl_mixed", ["trainer.total_training_steps=6", "trainer.test_freq=-1"], True),
    ("rl_mixed", [], True),  # steps unknown before the data is read: assume the real steps come
])
def test_needs_retriever(name, overrides, expected):
    assert needs_retriever(compose_rl_config(overrides, name)) is expected


def test_preflight_passes_for_stage1_without_a_retriever(paths):
    preflight(compose_rl_config(paths, "rl_stage1"))


def test_preflight_names_the_missing_retriever(paths):
    from retriever_server.serve import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RLConfigError, match=r"coa.retriever.url='http://127.0.0.1:\d+': no retriever answered"):
        preflight(compose_rl_config([*paths, f"coa.retriever.url={url}"], "rl_stage2"))


def test_preflight_accepts_a_live_retriever(paths, bm25_server):
    assert check_retriever(bm25_server.url, "coa.retriever.url")["backend"] == "bm25"
    preflight(compose_rl_config([*paths, f"coa.retriever.url={bm25_server.url}"], "rl_stage2"))


def test_preflight_names_bad_fidelity_settings(paths):
    with pytest.raises(RLConfigError, match=r"coa.world_model.fidelity_sample=1.5: must be in \[0, 1\]"):
        preflight(compose_rl_config([*paths, "coa.world_model.fidelity_sample=1.5"], "rl_stage1"))
    with pytest.raises(RLConfigError, match="coa.world_model.fidelity_corpus='/nope.jsonl' does not exist"):
        preflight(compose_rl_config([*paths, "coa.world_model.fidelity_corpus=/nope.jsonl"], "rl_stage1"))
    with pytest.raises(RLConfigError, match="coa.world_model.probe_sample=0 with coa.schedule.kind=fidelity"):
        preflight(compose_rl_config([*paths, "coa.schedule.kind=fidelity", "coa.world_model.probe_sample=0"],
                                    "rl_stage1"))
    with pytest.raises(ValueError, match="coa.schedule.fidelity_metric='bleu'"):
        preflight(compose_rl_config([*paths, "coa.schedule.fidelity_metric=bleu"], "rl_stage1"))


def test_preflight_names_a_missing_model_or_data_file(paths, tmp_path):
    with pytest.raises(RLConfigError, match="actor_rollout_ref.model.path=.*no Hugging Face model"):
        preflight(compose_rl_config([*paths, f"actor_rollout_ref.model.path={tmp_path}"], "rl_stage1"))
    with pytest.raises(RLConfigError, match=r"data.val_files: '/nope.parquet' does not exist"):
        preflight(compose_rl_config([*paths, "data.val_files=/nope.parquet"], "rl_stage1"))


def test_the_reward_follows_coa_preset():
    config = compose_rl_config(["coa.preset=autocoa"])
    assert config.reward.custom_reward_function.reward_kwargs.preset == "autocoa"
    assert compose_rl_config([]).reward.custom_reward_function.reward_kwargs.preset == "search_r1"


def test_preflight_refuses_data_written_for_another_preset(paths, tmp_path):
    from autocoa_verl.data.qa_files import write_verl_parquet

    preflight(compose_rl_config(paths, "rl_stage1"))  # search_r1 data, search_r1 loop
    with pytest.raises(RLConfigError, match=r"train.parquet: its prompts carry the 'search_r1' instruction, but "
                                            r"coa.preset='autocoa'; rebuild the data with --preset autocoa"):
        preflight(compose_rl_config([*paths, "coa.preset=autocoa"], "rl_stage1"))
    other = tmp_path / "autocoa.parquet"
    write_verl_parquet([{"id": "1", "question": "Who?", "golden_answers": ["A"]}], other, "toy_world", "train",
                       preset="autocoa")
    preflight(compose_rl_config([*paths, "coa.preset=autocoa", f"data.train_files={other}",
                                 f"data.val_files={other}"], "rl_stage1"))


def test_preflight_refuses_verls_v1_trainer(paths):
    with pytest.raises(RLConfigError, match=r"trainer.use_v1=true: the CoA manager extends verl's legacy"):
        preflight(compose_rl_config([*paths, "trainer.use_v1=true"], "rl_stage1"))


def test_inside_a_ray_job_the_cluster_keeps_its_own_resource_counts(monkeypatch, capsys):
    """Ray refuses num_cpus/num_gpus when ray.init joins a running cluster (a Ray job sets RAY_ADDRESS); the CPU
    overlay sets both for a cluster of its own."""
    from autocoa_verl.rl import join_running_cluster

    config = compose_rl_config(["+platform=rl_cpu"], "rl_stage2")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert join_running_cluster(config) is False and config.ray_kwargs.ray_init.num_cpus == 32
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert join_running_cluster(config) is True
    ray_init = config.ray_kwargs.ray_init
    assert ray_init.num_cpus is None and ray_init.num_gpus is None
    assert ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"  # the rest of the overlay stays
    assert "ray_init.num_gpus=1 is left to the cluster" in capsys.readouterr().out

"""What an RL run needs, checked before Ray and the engines start: the model, the data files and their preset, the
schedule, the retriever when a rollout will search it, and verl's legacy trainer. Each failure is an ``RLConfigError``
naming the config field."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from autocoa_verl.agent.retriever_client import check_retriever
from autocoa_verl.agent import fidelity
from autocoa_verl.agent.schedule import ObservationSchedule
from autocoa_verl.errors import ConfigError


class RLConfigError(ConfigError):
    """An RL run that cannot start: names the config field and what is wrong with it."""


def needs_retriever(config: DictConfig) -> bool:
    """Whether any rollout of this run (training up to ``total_training_steps`` if set, or validation) searches the
    real retriever."""
    schedule = ObservationSchedule.from_config(config.coa.schedule)
    if schedule.kind in ("always_real", "fidelity") or fidelity.shares(config.coa)[0] > 0:
        return True  # the fidelity schedule starts real; fidelity checks fetch real observations
    validates = config.trainer.test_freq > 0 or config.trainer.val_before_train or config.trainer.val_only
    if validates and schedule.validation == "real":
        return True
    if schedule.kind == "always_simulated":
        return False
    steps = config.trainer.total_training_steps
    if steps is None:
        return True
    return schedule.count(1, int(steps))["real"] > 0


def _paths(files) -> list[str]:
    return [files] if isinstance(files, str) else list(files)


def check_data_preset(path: str | Path, preset: str, prompt_key: str = "prompt") -> None:
    """Raises :class:`RLConfigError` if the first prompt of an RL parquet carries another preset's instruction than
    ``preset`` (the reward and the loop follow ``coa.preset``; the prompt baked into the data must too). A prompt
    that carries no instruction of ours (data written elsewhere) is not judged."""
    import pyarrow.parquet as pq

    from autocoa_verl.protocol import preset_of_prompt

    batch = next(pq.ParquetFile(path).iter_batches(batch_size=1, columns=[prompt_key]), None)
    if batch is None or batch.num_rows == 0:
        raise RLConfigError(f"{path}: no rows")
    user = [m["content"] for m in batch.to_pylist()[0][prompt_key] if m["role"] == "user"]
    found = preset_of_prompt(user[0]) if user else None
    if found is not None and found != preset:
        raise RLConfigError(f"{path}: its prompts carry the {found!r} instruction, but coa.preset={preset!r}; rebuild "
                            f"the data with --preset {preset} (python -m autocoa_verl.data.toy_world / qa_files) or "
                            f"set coa.preset={found}")


def check_layout(config: DictConfig) -> None:
    """Raises :class:`RLConfigError` if the batch sizes do not split over the cluster's GPUs the way verl's workers
    split them (``verl.utils.config.validate_config`` checks the global batch; the FSDP workers check the rest only
    after Ray has placed them and loaded the model). Dynamic batch sizes skip the micro-batch checks, as in verl.

    The actor's mini-batch is ``ppo_mini_batch_size x rollout.n`` sequences, split over the data-parallel ranks
    (GPUs / Ulysses degree), and each rank's share is cut into micro-batches of ``ppo_micro_batch_size_per_gpu``.
    """
    trainer, ref = config.trainer, config.actor_rollout_ref
    gpus, tp = trainer.n_gpus_per_node * trainer.nnodes, ref.rollout.tensor_model_parallel_size
    if trainer.n_gpus_per_node % tp:
        raise RLConfigError(f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp} does not divide "
                            f"trainer.n_gpus_per_node={trainer.n_gpus_per_node}: a vLLM replica must fit on a node")
    if ref.actor.use_dynamic_bsz:
        return
    dp = gpus // ref.actor.get("ulysses_sequence_parallel_size", 1)
    mini, micro = ref.actor.ppo_mini_batch_size * ref.rollout.n, ref.actor.ppo_micro_batch_size_per_gpu
    if mini % dp or (mini // dp) % micro:
        raise RLConfigError(
            f"actor_rollout_ref.actor.ppo_mini_batch_size={ref.actor.ppo_mini_batch_size}: x rollout.n="
            f"{ref.rollout.n} is {mini} sequences per mini-batch, which {dp} data-parallel GPUs cannot split into "
            f"micro-batches of ppo_micro_batch_size_per_gpu={micro} (each GPU's share must be a multiple of it)")


def preflight(config: DictConfig) -> None:
    """Fails fast, before Ray and the engines start, on a batch layout the GPUs cannot split, or a missing model,
    data file or retriever."""
    check_layout(config)
    model = Path(config.actor_rollout_ref.model.path)
    if not (model / "config.json").is_file():
        raise RLConfigError(f"actor_rollout_ref.model.path={str(model)!r}: no Hugging Face model there (config.json). "
                            "Run the SFT stages first (make sft-stage3) or pass MODEL=.")
    for field in ("train_files", "val_files"):
        for path in _paths(config.data[field]):
            if not Path(path).is_file():
                raise RLConfigError(f"data.{field}: {path!r} does not exist (make toy-world builds the toy world's).")
            check_data_preset(path, config.coa.preset, config.data.get("prompt_key", "prompt"))
    ObservationSchedule.from_config(config.coa.schedule)  # validates the schedule's fields
    try:
        _, probes = fidelity.shares(config.coa)
    except ValueError as error:
        raise RLConfigError(str(error)) from None
    if config.coa.schedule.kind == "fidelity" and probes == 0:
        raise RLConfigError("coa.world_model.probe_sample=0 with coa.schedule.kind=fidelity: real steps would never "
                            "measure the world model, so the run would never simulate; leave it null (0.25) or > 0")
    corpus = config.coa.world_model.get("fidelity_corpus")
    if corpus and not Path(corpus).is_file():
        raise RLConfigError(f"coa.world_model.fidelity_corpus={corpus!r} does not exist")
    if config.trainer.use_v1:
        raise RLConfigError("trainer.use_v1=true: the CoA manager extends verl's legacy agent-loop manager; keep "
                            "trainer.use_v1=false (rl_base.yaml).")
    if needs_retriever(config):
        try:
            check_retriever(config.coa.retriever.url, "coa.retriever.url")
        except ConfigError as error:
            raise RLConfigError(f"{error}. Start one (make retriever) or pass its address (RETRIEVER=http://host:port);"
                                " RL stage 1 (rl_stage1) needs none.") from None

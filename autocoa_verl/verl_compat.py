"""Every private verl symbol this package stands on, with why, in one place (written against verl 0.9.1).

Each extension goes through a hook verl offers (a class path in the config, a registry, a plugin entry point), but
some hooks are private names: a method we override, an attribute we set before or read after verl's own code runs.
A verl upgrade that renames one would otherwise fail deep inside an end-to-end run; ``tests/test_verl_compat_on_cpu.py``
checks each entry in seconds (it exists; a method takes the parameters we call it with; an attribute is still
assigned where we expect it), with this table's reason in the failure message.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class PrivateSymbol:
    """``owner`` is ``"module:Class"``; ``name`` a method (``params``: the parameter names we pass; ``calls``: a call
    its source must still make), an instance attribute that verl assigns in method ``set_in``, or None (the class
    itself is what we use)."""

    owner: str
    name: str | None
    why: str
    params: tuple[str, ...] | None = None
    set_in: str | None = None
    calls: str | None = None

    def resolve(self) -> type:
        module, cls = self.owner.split(":")
        return getattr(importlib.import_module(module), cls)

    def problem(self) -> str | None:
        """What no longer holds in the installed verl, or None."""
        try:
            owner = self.resolve()
        except (ImportError, AttributeError) as error:
            return f"{self.owner} is gone ({error})"
        if self.name is None:
            return None
        if self.set_in is None:  # a method: params and/or calls
            method = getattr(owner, self.name, None)
            if not callable(method):
                return f"{self.owner}.{self.name} is gone"
            if self.params is not None and (have := tuple(inspect.signature(method).parameters)) != self.params:
                return f"{self.owner}.{self.name} takes {have}, we call it with {self.params}"
            if self.calls is not None and f"{self.calls}(" not in inspect.getsource(method):
                return f"{self.owner}.{self.name} no longer calls {self.calls}"
            return None
        source = inspect.getsource(getattr(owner, self.set_in))
        if f"self.{self.name} =" not in source and f"self.{self.name}=" not in source:
            return f"{self.owner}.{self.set_in} no longer assigns self.{self.name}"
        return None


_AGENT_LOOP = "verl.experimental.agent_loop.agent_loop:AgentLoopManager"
_SFT = "verl.trainer.sft_trainer:SFTTrainer"
_VLLM = "verl.workers.rollout.vllm_rollout.vllm_async_server"

PRIVATE: tuple[PrivateSymbol, ...] = (
    # agent/manager.py: the CoA manager under the legacy trainer
    PrivateSymbol(_AGENT_LOOP, "_performance_metrics", params=("self", "metrics", "output"),
                  why="CoAAgentLoopManager adds the loops' coa/ metrics to each step's timing dict; verl has no public "
                      "hook for rollout metrics"),
    PrivateSymbol(_AGENT_LOOP, "agent_loop_workers_class", set_in="__init__",
                  why="CoAAgentLoopManager sets its worker class before verl's __init__, which keeps it only if "
                      "already set (hasattr); the worker passes the training step to every sample"),
    # sft/trainer.py: stage 1's contrastive trainer
    PrivateSymbol(_SFT, "_build_engine", params=("self",),
                  why="ContrastiveSFTTrainer swaps in the contrastive loss once verl has built its training client"),
    PrivateSymbol(_SFT, "training_client", set_in="_build_engine",
                  why="its set_loss_fn / train_batch carry stage 1's loss and its pair metrics"),
    PrivateSymbol(_SFT, "_build_dataloader", params=("self",),
                  why="ContrastiveSFTTrainer lays each pair out as two adjacent rows (PairCollator)"),
    PrivateSymbol(_SFT, "train_batch_size_per_dp", set_in="_build_dataloader",
                  why="rows per data-parallel rank must hold whole pairs"),
    PrivateSymbol(_SFT, "collate_fn", set_in="_build_dataloader", why="wrapped by PairCollator"),
    PrivateSymbol(_SFT, "train_dataloader", set_in="_build_dataloader", why="given the pair collator"),
    PrivateSymbol(_SFT, "val_dataloader", set_in="_build_dataloader", why="given the pair collator"),
    # cpu/rollout.py: the vLLM-CPU replica whose weights the trainer's sync reaches
    PrivateSymbol(f"{_VLLM}:vLLMHttpServer", "_get_worker_extension_cls", params=("self",),
                  why="CPUvLLMHttpServer names the worker extension that keeps packed CPU linear weights loadable"),
    PrivateSymbol("verl.workers.rollout.vllm_rollout.utils:vLLMColocateWorkerExtension", "update_weights_from_ipc",
                  calls="process_weights_after_loading",
                  why="a weight sync must end by packing the loaded CPU linear weights again (cpu/rollout.py keeps "
                      "the parameters, vLLM's process_weights_after_loading packs them)"),
    PrivateSymbol(f"{_VLLM}:vLLMReplica", "server_class", set_in="__init__",
                  why="CPUvLLMReplica starts CPUvLLMHttpServer instead of verl's server"),
    # rl.py: the legacy trainer's task runner (the CoA manager extends the legacy agent-loop manager)
    PrivateSymbol("verl.trainer.main_ppo_v0:TaskRunner", None,
                  why="run_rl hands it to verl's run_ppo (trainer.use_v1=false)"),
)


def problems() -> list[str]:
    """Every entry of :data:`PRIVATE` that the installed verl breaks, with the reason we need it."""
    return [f"{p}: needed because {s.why}" for s in PRIVATE if (p := s.problem())]

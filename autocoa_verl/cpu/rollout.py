"""verl's vLLM rollout on the CPU platform: a replica whose engine keeps its linear weights live, so the trainer's
weight sync reaches the model that generates.

vLLM-CPU packs every linear weight into a oneDNN (or sgl-kernel) handle when the model is loaded
(``dispatch_cpu_unquantized_gemm``) and replaces ``layer.weight`` with an empty tensor that has no ``weight_loader``.
verl syncs the policy into the engine after every update by ``model.load_weights`` (``update_weights_from_ipc``), which
then fails on the emptied parameters, and even where it did not, the packed handles would keep the old weights. The
fix goes through verl's own hooks, without forking it:

    ``LiveWeightsWorkerExtension``  verl's worker extension (``vLLMColocateWorkerExtension``) that, in the engine's
                                    worker process and before the model loads, makes 2-D CPU linears call
                                    ``torch.nn.functional.linear`` on the layer's own weight (other layers unchanged).
    ``CPUvLLMHttpServer``           verl's ``vLLMHttpServer`` naming that extension (``_get_worker_extension_cls``),
                                    and giving the engine every core of a small machine (``give_vllm_all_cores``).
    ``CPUvLLMReplica``              verl's ``vLLMReplica`` that starts that server. The CPU platform registers it
                                    under the name "vllm" in verl's ``RolloutReplicaRegistry`` (``platform.py``),
                                    so ``rollout.name=vllm`` is all a config says.

Cost: the unpacked GEMM is slower than oneDNN's packed one for large layers; for the models a CPU run trains (tiny,
SmolLM2-135M) generation time is dominated elsewhere (see the RL benchmark). ``tests/cpu/test_rollout_on_cpu.py``
checks the patch against the vLLM it is written for.
The private verl names this module relies on are listed, and tested, in ``autocoa_verl/verl_compat.py``.
"""

from __future__ import annotations

from typing import Any

import ray
import torch
from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension
from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer, vLLMReplica

from autocoa_verl.cpu import give_vllm_all_cores


def _live_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.nn.functional.linear(x, weight, bias)


def use_live_cpu_weights() -> None:
    """Makes vLLM-CPU's linear layers read ``layer.weight`` at every call instead of a copy packed at load time.

    Idempotent; affects this process only (vLLM loads models in its worker processes, where verl instantiates the
    worker extension below).
    """
    from vllm.model_executor.layers import utils

    original = utils.dispatch_cpu_unquantized_gemm
    if getattr(original, "_autocoa_live_weights", False):
        return

    def dispatch_cpu_unquantized_gemm(layer: torch.nn.Module, remove_weight: bool) -> None:
        if layer.weight.is_meta or layer.weight.ndim != 2:
            return original(layer, remove_weight)
        layer.cpu_linear = _live_linear

    dispatch_cpu_unquantized_gemm._autocoa_live_weights = True
    dispatch_cpu_unquantized_gemm.__wrapped__ = original
    utils.dispatch_cpu_unquantized_gemm = dispatch_cpu_unquantized_gemm


class LiveWeightsWorkerExtension(vLLMColocateWorkerExtension):
    """verl's colocated-worker extension, plus live CPU linear weights (set up before the worker loads the model)."""

    def __new__(cls, **kwargs: Any):
        use_live_cpu_weights()
        return super().__new__(cls, **kwargs)


class CPUvLLMHttpServer(vLLMHttpServer):
    def __init__(self, *args: Any, **kwargs: Any):
        give_vllm_all_cores()
        super().__init__(*args, **kwargs)

    def _get_worker_extension_cls(self) -> str:
        return f"{LiveWeightsWorkerExtension.__module__}.{LiveWeightsWorkerExtension.__qualname__}"


class CPUvLLMReplica(vLLMReplica):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(CPUvLLMHttpServer)


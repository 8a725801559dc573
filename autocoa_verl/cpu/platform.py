"""A CPU platform for verl, so verl's own trainers run unchanged on a machine with no accelerator: the SFT trainer
(tests/recipes/test_sft_on_cpu.py) and the PPO/GRPO trainer with a vLLM-CPU rollout (tests/recipes/test_rl_on_cpu.py).

verl 0.9 has no CPU platform, but it has a platform-plugin hook: a module loaded at ``import verl`` (through the
``verl.plugins`` entry point this package declares, or ``VERL_USE_EXTERNAL_MODULES=autocoa_verl.cpu.platform``)
registers a class with ``PlatformRegistry``; ``VERL_PLATFORM=cpu`` selects it. Nothing happens unless it is selected:
GPU users are unaffected.

Each piece, and why it exists:
    ``PlatformCPU``                 device "cpu", gloo collectives, ``torch.cpu`` plus the few memory/RNG calls verl
                                    makes on a device module (``_CPUDeviceModule``).
    ``_select_fsdp_engines``        verl registers its FSDP engines for ``cuda``/``npu`` only; its engine-selection
                                    override (``VERL_ENGINE_DEVICE``) picks the same device-agnostic FSDP2 classes.
    ``_patch_init_process_group``   verl builds the backend string ``"cpu:gloo,{device}:{backend}"``,
                                    which on CPU is ``"cpu:gloo,cpu:gloo"`` and torch rejects the duplicate device.
                                    We collapse exactly that string to ``"gloo"``. ``tests/cpu/test_platform_on_cpu.py``
                                    fails when torch accepts the string (patch no longer needed) or verl stops building
                                    it (patch no longer applies).
    ``_unpin_cpu_offload``          verl builds the reference model forward-only with FSDP2's
                                    ``CPUOffloadPolicy(pin_memory=True)``; pinning needs an accelerator ("Cannot access
                                    accelerator device when none is available"). On CPU the policy is built unpinned,
                                    so the KL loss runs as on GPU. Tested like the backend patch: still needed, still
                                    applies.
    ``_use_all_cores``              torchrun and Ray start workers with OMP_NUM_THREADS=1 (right for GPU workers; a
                                    SmolLM2 fp32 SFT step took 161 s with 1 thread, 25 s with 2): each local rank gets
                                    its share of the cores instead (``AUTOCOA_CPU_THREADS`` overrides).
    ``_register_cpu_vllm_replica``  ``rollout.name=vllm`` starts ``rollout.CPUvLLMReplica``, whose engine keeps its
                                    packed linear weights loadable so verl's weight sync reaches it (see that module).
    ``ray_resource_name() == "GPU"`` verl's Ray worker groups only count "GPU"/"NPU" resources, so a CPU run declares
                                    logical GPUs to Ray (``ray_init.num_gpus``) and its workers ask for those.
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Optional

import torch
import torch.distributed
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry

DUPLICATE_CPU_BACKEND = "cpu:gloo,cpu:gloo"


class _CPUDeviceModule(ModuleType):
    """``torch.cpu`` with the memory, RNG and IPC calls that verl makes on a CUDA device module."""

    def __init__(self) -> None:
        super().__init__("autocoa_verl.cpu_device")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    @staticmethod
    def set_device(device_index: int) -> None:
        """CPU has one device; verl passes the local rank, which is meaningless here."""

    @staticmethod
    def empty_cache() -> None:
        gc.collect()

    @staticmethod
    def ipc_collect() -> None:
        pass

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        pass

    @staticmethod
    def get_rng_state(device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        import psutil

        memory = psutil.virtual_memory()
        return memory.available, memory.total

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        import psutil

        return psutil.Process().memory_info().rss

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return "cpu"


_DEVICE_MODULE = _CPUDeviceModule()


def _select_fsdp_engines() -> None:
    """verl registers its FSDP engines for cuda/npu only, and its engine modules ask for the platform while they are
    imported (so registering them for "cpu" from here would be a circular import). verl's own override for engine
    selection, ``VERL_ENGINE_DEVICE``/``VERL_ENGINE_VENDOR``, picks the same device-agnostic FSDP2 classes."""
    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
    os.environ.setdefault("VERL_ENGINE_VENDOR", "nvidia")


def _use_all_cores() -> None:
    """Gives this process cores / local world size torch threads (or ``AUTOCOA_CPU_THREADS``)."""
    threads = int(os.environ.get("AUTOCOA_CPU_THREADS", "0"))
    if threads <= 0:
        threads = max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    torch.set_num_threads(threads)


def _patch_init_process_group() -> None:
    """Collapses verl's ``"cpu:gloo,cpu:gloo"`` backend string to ``"gloo"`` (see the module docstring)."""
    original = torch.distributed.init_process_group
    if getattr(original, "_autocoa_cpu_patch", False):
        return

    def init_process_group(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("backend") == DUPLICATE_CPU_BACKEND:
            kwargs["backend"] = "gloo"
        elif args and args[0] == DUPLICATE_CPU_BACKEND:
            args = ("gloo", *args[1:])
        return original(*args, **kwargs)

    init_process_group._autocoa_cpu_patch = True
    init_process_group.__wrapped__ = original
    torch.distributed.init_process_group = init_process_group


def _unpin_cpu_offload() -> None:
    """FSDP2's ``CPUOffloadPolicy`` is built with ``pin_memory=False`` in this process (see the module docstring).
    Patched on the class, which every importer shares, so the order in which verl's modules load does not matter."""
    from torch.distributed.fsdp import CPUOffloadPolicy

    original = CPUOffloadPolicy.__init__
    if getattr(original, "_autocoa_cpu_patch", False):
        return

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.pin_memory = False

    __init__._autocoa_cpu_patch = True
    __init__.__wrapped__ = original
    CPUOffloadPolicy.__init__ = __init__


def _load_cpu_vllm_replica() -> type:
    from autocoa_verl.cpu.rollout import CPUvLLMReplica  # imports vLLM: only when a rollout is started

    return CPUvLLMReplica


def _register_cpu_vllm_replica() -> None:
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register("vllm", _load_cpu_vllm_replica)


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    """verl on the CPU: gloo collectives, FSDP2 engines, logical "GPU" Ray resources (see the module docstring)."""

    def __init__(self) -> None:
        _patch_init_process_group()
        _unpin_cpu_offload()
        _select_fsdp_engines()
        _use_all_cores()
        _register_cpu_vllm_replica()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: a CPU run is asked for explicitly with VERL_PLATFORM=cpu.
        return False

    def current_device(self) -> str:
        # verl moves modules with ``.to(get_device_id())``; an integer there means an accelerator index.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        pass

    def synchronize(self, device_index: Optional[int] = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        gc.collect()

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


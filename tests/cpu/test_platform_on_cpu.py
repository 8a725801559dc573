"""The CPU platform plugin: selection, and each patch it applies with whether that patch is still needed and still
applies to the verl it stands on."""

import json
import os
import subprocess
import sys
import textwrap

import torch

from autocoa_verl.cpu.platform import DUPLICATE_CPU_BACKEND
from retriever_server.serve import free_port


def _run(code: str, **env) -> dict:
    """Runs ``code`` in a fresh interpreter (verl resolves its platform once per process); returns its JSON line."""
    full_env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
                "LOCAL_RANK": "0", "WORLD_SIZE": "1", **env}
    if "VERL_PLATFORM" not in env:
        full_env.pop("VERL_PLATFORM", None)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cpu_platform_is_selected_only_when_asked():
    code = """
        import json
        from verl.utils.device import get_device_name, get_nccl_backend, get_torch_device
        from verl.workers.engine.base import EngineRegistry
        if get_device_name() != "cpu":
            print(json.dumps({"device": get_device_name()}))
        else:
            print(json.dumps({"device": get_device_name(), "backend": get_nccl_backend(),
                              "engine": EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__,
                              "rng_state_bytes": get_torch_device().get_rng_state().numel()}))
    """
    selected = _run(code, VERL_PLATFORM="cpu")
    assert selected == {"device": "cpu", "backend": "gloo", "engine": "FSDPEngineWithLMHead",
                        "rng_state_bytes": torch.get_rng_state().numel()}
    assert _run(code)["device"] != "cpu"


def test_patch_applies_verl_still_builds_the_duplicate_backend():
    code = """
        import json, torch.distributed as dist
        from verl.utils.device import get_device_name
        get_device_name()  # instantiates the platform, which installs the patch
        patched = dist.init_process_group
        built = []
        def recording(*args, **kwargs):
            built.append(kwargs.get("backend", args[0] if args else None))
            return patched(*args, **kwargs)
        dist.init_process_group = recording
        from verl.utils.distributed import initialize_global_process_group
        initialize_global_process_group()
        print(json.dumps({"patched": patched._autocoa_cpu_patch, "built": built[0], "used": dist.get_backend()}))
    """
    result = _run(code, VERL_PLATFORM="cpu")
    assert result == {"patched": True, "built": DUPLICATE_CPU_BACKEND, "used": "gloo"}


def test_patch_still_needed_torch_rejects_the_duplicate_backend():
    code = f"""
        import json, torch.distributed as dist
        try:
            dist.init_process_group(backend="{DUPLICATE_CPU_BACKEND}", rank=0, world_size=1,
                                    init_method="tcp://127.0.0.1:29612")
            print(json.dumps({{"rejected": False}}))
        except Exception as e:
            print(json.dumps({{"rejected": True, "error": type(e).__name__}}))
    """
    assert _run(code)["rejected"] is True


def test_unpin_patch_applies_verl_still_builds_the_reference_pinned():
    """verl's FSDP2 engine builds forward-only models (the reference) with CPUOffloadPolicy(pin_memory=True); on the
    CPU platform that policy comes out unpinned, and a forward through an offloaded FSDP2 module works."""
    import inspect

    from verl.workers.engine.fsdp import transformer_impl

    assert "CPUOffloadPolicy(pin_memory=True)" in inspect.getsource(transformer_impl.FSDPEngine)
    code = """
        import json, torch, torch.distributed as dist
        from verl.utils.device import get_device_name
        get_device_name()  # instantiates the platform, which installs the patch
        from torch.distributed.device_mesh import init_device_mesh
        from verl.utils.fsdp_utils import CPUOffloadPolicy, fully_shard
        dist.init_process_group("gloo")
        policy = CPUOffloadPolicy(pin_memory=True)
        module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        fully_shard(module, mesh=init_device_mesh("cpu", (1,)), offload_policy=policy)
        with torch.no_grad():
            shape = list(module(torch.ones(3, 4)).shape)
        print(json.dumps({"pinned": policy.pin_memory, "shape": shape}))
    """
    assert _run(code, VERL_PLATFORM="cpu") == {"pinned": False, "shape": [3, 2]}


def test_unpin_patch_still_needed_a_pinned_offload_fails_without_an_accelerator():
    code = """
        import json, torch, torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard
        dist.init_process_group("gloo")
        module = torch.nn.Linear(4, 2)
        try:
            fully_shard(module, mesh=init_device_mesh("cpu", (1,)), offload_policy=CPUOffloadPolicy(pin_memory=True))
            print(json.dumps({"failed": False}))
        except RuntimeError as e:
            print(json.dumps({"failed": True, "accelerator": "accelerator" in str(e)}))
    """
    assert _run(code) == {"failed": True, "accelerator": True}

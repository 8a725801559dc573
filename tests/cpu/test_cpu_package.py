import os

import pytest

from autocoa_verl import cpu


@pytest.mark.parametrize("cores, preset, expected", [
    (2, None, "0"),     # a small machine: the model gets both cores
    (1, None, "0"),
    (16, None, None),   # a larger one keeps vLLM's reserved scheduler core
    (2, "1", "1"),      # what the user set stays (rl_bench's BEFORE sets 1)
])
def test_vllm_gets_every_core_of_a_small_machine_only(monkeypatch, cores, preset, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    if preset is None:
        monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    else:
        monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", preset)
    cpu.give_vllm_all_cores()
    assert os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU") == expected

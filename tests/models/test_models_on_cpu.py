import json

import torch
from transformers import AutoModelForCausalLM

from autocoa_verl.models import build_tiny_qwen2
from autocoa_verl.models.cache import complete_marker
from autocoa_verl.models.smollm2 import GGUF_FILE, smollm2_gguf_dir


def test_tiny_model_shape_tokenizer_and_chat_template(tiny_model_dir, tiny_tokenizer):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert (config["model_type"], config["head_dim"], config["num_hidden_layers"]) == ("qwen2", 64, 2)
    assert config["vocab_size"] == len(tiny_tokenizer)
    text = "<search> Arlo Venn birthplace </search>"
    assert tiny_tokenizer.decode(tiny_tokenizer(text)["input_ids"]) == text
    chat = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                              add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    logits = model(torch.tensor([tiny_tokenizer(text)["input_ids"]])).logits
    assert logits.shape[-1] == len(tiny_tokenizer) and torch.isfinite(logits).all()


def test_tiny_model_build_is_reused_unless_forced(tiny_model_dir, tmp_path):
    stamp = complete_marker(tiny_model_dir).stat().st_mtime_ns
    assert build_tiny_qwen2(tiny_model_dir) == tiny_model_dir
    assert complete_marker(tiny_model_dir).stat().st_mtime_ns == stamp
    # an interrupted build (no marker) is redone
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    build_tiny_qwen2(partial)
    assert json.loads((partial / "config.json").read_text())["model_type"] == "qwen2"


def test_smollm2_ships_in_its_package():
    assert (smollm2_gguf_dir() / GGUF_FILE).stat().st_size > 50_000_000


def test_smollm2_materialises_and_generates(tmp_path):
    from transformers import AutoTokenizer

    from autocoa_verl.models import materialize_smollm2

    out = materialize_smollm2(tmp_path / "smollm2")
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out_ids = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out_ids[0, ids["input_ids"].shape[1]:])

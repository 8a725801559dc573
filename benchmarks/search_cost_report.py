"""The report of RL arms against the all-real run of the same learning-benchmark directory: training curves and the
test-split evaluation that ``benchmarks/rl_arm_run.sh`` makes for each arm (``search_cost_run.sh`` is one arm).

Run: ``python benchmarks/search_cost_report.py --run build/bench/learning --steps 16 --out DIR [--arm NAME ...]``.
Writes ``<stem>.json`` and ``<stem>.md`` into ``--out`` (``--stem``, default ``search_cost``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autocoa_verl.rl_logs import dumped_question  # noqa: E402
from benchmarks.provenance import provenance, write_report  # noqa: E402

LABELS = {"search_cost": "RL search cost 0.1", "stratified": "RL hop-stratified batches",
          "stratified_search_cost": "RL hop-stratified batches + search cost 0.1"}


def hops_by_question(toy: Path) -> dict[str, int]:
    return {row["question"]: int(row["hops"]) for row in map(json.loads, open(toy / "train.jsonl"))}


def training_curve(dumps: Path, steps: int, hops: dict[str, int]) -> dict[str, list[float]]:
    """Per step, from verl's rollout dumps: mean EM (correctness, whatever the reward), searches per sample and the
    over-search rate (searches beyond the question's hops)."""
    curve: dict[str, list[float]] = {"em": [], "searches": [], "over_search": []}
    for step in range(1, steps + 1):
        rows = [json.loads(line) for line in open(dumps / f"{step}.jsonl")]
        searches = [r.get("searches", r.get("num_searches")) for r in rows]
        question_hops = [hops[dumped_question(r["input"])] for r in rows]
        curve["em"].append(statistics.mean(r["em"] for r in rows))
        curve["searches"].append(statistics.mean(searches))
        curve["over_search"].append(statistics.mean(s > h for s, h in zip(searches, question_hops)))
    return curve


def test_rows(records: Path) -> dict[str, dict]:
    """EM, searches per question and over-search rate, overall and by hops, per evaluated model."""
    out = {}
    for path in sorted(records.glob("agent (*).jsonl")):
        rows = [json.loads(line) for line in open(path)]
        by_hops: dict[str, dict] = {}
        for h in sorted({r["hops"] for r in rows}):
            group = [r for r in rows if r["hops"] == h]
            by_hops[str(h)] = {"questions": len(group), "em": statistics.mean(r["em"] for r in group),
                               "searches": statistics.mean(r["searches"] for r in group),
                               "over_search": statistics.mean(r["searches"] > h for r in group)}
        out[path.stem[len("agent ("):-1]] = {
            "questions": len(rows), "em": statistics.mean(r["em"] for r in rows),
            "searches": statistics.mean(r["searches"] for r in rows),
            "over_search": statistics.mean(r["searches"] > r["hops"] for r in rows),
            "when_to_act": statistics.mean(bool(r["acted_when_needed"]) for r in rows), "by_hops": by_hops}
    return out


def markdown(report: dict) -> str:
    lines = [f"# {report['title']} (toy world, CPU)", "",
             f"Commit `{report['commit']}`; command: `{report['command']}`.", "",
             f"## Test split ({report['test_questions']} questions, greedy, bm25 top-3), step {report['steps']}", "",
             "| model (evaluation) | EM | searches / q | over-search | when-to-act | EM 0 / 1 / 2 / 3 hops | searches / q, "
             "0 / 1 / 2 / 3 hops | over-search, 0 / 1 / 2 / 3 hops |", "|---|---|---|---|---|---|---|---|"]
    for name, r in report["test"].items():
        hop = lambda key: " / ".join(f"{r['by_hops'][h][key]:.3f}" if key != "searches"  # noqa: E731
                                     else f"{r['by_hops'][h][key]:.2f}" for h in sorted(r["by_hops"]))
        lines.append(f"| {name} | {r['em']:.3f} | {r['searches']:.2f} | {r['over_search']:.3f} | "
                     f"{r['when_to_act']:.3f} | {hop('em')} | {hop('searches')} | {hop('over_search')} |")
    lines += ["", "## Training (per GRPO step, from the rollout dumps: 4 questions x 8 samples)", ""]
    for name, curve in report["training"].items():
        lines.append(f"- {name}: EM " + ", ".join(f"{x:.2f}" for x in curve["em"]) + "; searches per sample "
                     + ", ".join(f"{x:.2f}" for x in curve["searches"]) + "; over-search "
                     + ", ".join(f"{x:.2f}" for x in curve["over_search"]))
    for name, run in report.get("ledgers", {}).items():
        line = f"{name}: {run['real_calls']:.0f} real retriever calls"
        if run["probe_tokens"]:
            line += (f"; world-model probes on its real observations ({run['probe_tokens']:.0f} tokens) found "
                     "answer-bearing blocks per step: "
                     + ", ".join("—" if f is None else f"{f:.2f}" for f in run["answer_bearing_by_step"]))
        lines += ["", line]
    return "\n".join(lines) + "\n"


def test_split(run: Path, arms: list[str]) -> dict[str, dict]:
    """Every arm's evaluation rows, named ``model (test-<arm>)``: each evaluation also re-scores all-real."""
    rows = {}
    for arm in arms:
        evaluation = f"test-{arm.replace('_', '-')}"
        rows |= {f"{model} ({evaluation})": row for model, row in test_rows(run / "eval" / evaluation / "records"
                                                                           / "toy").items()}
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("build/bench/learning"), help="the learning-benchmark dir")
    parser.add_argument("--toy", type=Path, default=Path("build/toy"))
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("build/bench/search_cost"))
    parser.add_argument("--arm", action="append", help="an rl_arm_run.sh arm's NAME (repeatable; default "
                                                        "search_cost)")
    parser.add_argument("--title", default="The search-cost reward")
    parser.add_argument("--stem", default="search_cost", help="the report's file name, without extension")
    args = parser.parse_args(argv)
    arms = args.arm or ["search_cost"]
    for arm in arms:
        records = args.run / "eval" / f"test-{arm.replace('_', '-')}" / "records" / "toy"
        if not records.is_dir():
            parser.error(f"{records}: no test evaluation (bash benchmarks/rl_arm_run.sh {args.run} {args.steps} "
                         f"{arm} ...)")
    hops = hops_by_question(args.toy)
    test = test_split(args.run, arms)
    runs = {"RL all-real": "rl_real"} | {LABELS.get(arm, f"RL {arm}"): f"rl_{arm}" for arm in arms}
    report = {**provenance("search_cost_report.py", argv), "title": args.title, "steps": args.steps,
              "test_questions": next(iter(test.values()))["questions"], "test": test,
              "training": {name: training_curve(args.run / "rl" / key / "rollouts", args.steps, hops)
                           for name, key in runs.items()}, "ledgers": {}}
    for name, key in runs.items():  # real calls, and the world-model probes' answer-bearing share per step
        ledger = args.run / "checkpoints" / key / "coa_ledger.json"
        if ledger.is_file():
            history = json.loads(ledger.read_text())["history"][: args.steps]
            report["ledgers"][name] = {"answer_bearing_by_step": [h["fidelity"] for h in history],
                                       "real_calls": sum(h["real_calls"] for h in history),
                                       "probe_tokens": sum(h["probe_tokens"] for h in history)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, args.stem, report, markdown(report), indent=1)


if __name__ == "__main__":
    main()

"""The search-cost reward's report: training curves of the search-cost run against the all-real run of the same
learning-benchmark directory, and their test-split evaluation (``benchmarks/search_cost_run.sh`` makes both).

Run: ``python benchmarks/search_cost_report.py --run build/bench/learning --steps 16 --out DIR``. Writes
``search_cost.json`` and ``search_cost.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import provenance, write_report  # noqa: E402

RUNS = {"RL all-real": "rl_real", "RL search cost 0.1": "rl_search_cost"}


def hops_by_question(toy: Path) -> dict[str, int]:
    return {row["question"]: int(row["hops"]) for row in map(json.loads, open(toy / "train.jsonl"))}


def training_curve(dumps: Path, steps: int, hops: dict[str, int]) -> dict[str, list[float]]:
    """Per step, from verl's rollout dumps: mean EM (correctness, whatever the reward), searches per sample and the
    over-search rate (searches beyond the question's hops)."""
    curve: dict[str, list[float]] = {"em": [], "searches": [], "over_search": []}
    for step in range(1, steps + 1):
        rows = [json.loads(line) for line in open(dumps / f"{step}.jsonl")]
        searches = [r.get("searches", r.get("num_searches")) for r in rows]
        question_hops = [hops[r["input"].rsplit("Question: ", 1)[1].split("\n", 1)[0]] for r in rows]
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
    lines = ["# The search-cost reward (toy world, CPU)", "",
             f"Commit `{report['commit']}`; command: `{report['command']}`.", "",
             f"## Test split ({report['test_questions']} questions, greedy, bm25 top-3), step {report['steps']}", "",
             "| model | EM | searches / q | over-search | when-to-act | EM 0 / 1 / 2 / 3 hops | searches / q, 0 / 1 / 2 / 3 "
             "hops | over-search, 0 / 1 / 2 / 3 hops |", "|---|---|---|---|---|---|---|---|"]
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
    run = report.get("search_cost_run")
    if run:
        lines += ["", f"Search-cost run: {run['real_calls']:.0f} real retriever calls; world-model probes on 10% of "
                  f"its real observations ({run['probe_tokens']:.0f} tokens) found answer-bearing blocks per step: "
                  + ", ".join("—" if f is None else f"{f:.2f}" for f in run["answer_bearing_by_step"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("build/bench/learning"), help="the learning-benchmark dir")
    parser.add_argument("--toy", type=Path, default=Path("build/toy"))
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("build/bench/search_cost"))
    args = parser.parse_args(argv)
    records = args.run / "eval" / "test-search-cost" / "records" / "toy"
    if not records.is_dir():
        parser.error(f"{records}: no test evaluation (bash benchmarks/search_cost_run.sh {args.run} {args.steps})")
    hops = hops_by_question(args.toy)
    test = test_rows(records)
    report = {**provenance("search_cost_report.py", argv), "steps": args.steps,
              "test_questions": next(iter(test.values()))["questions"], "test": test,
              "training": {name: training_curve(args.run / "rl" / key / "rollouts", args.steps, hops)
                           for name, key in RUNS.items()}}
    ledger = args.run / "checkpoints" / "rl_search_cost" / "coa_ledger.json"
    if ledger.is_file():  # the search-cost run's world-model probes: answer-bearing per step, and its real calls
        history = json.loads(ledger.read_text())["history"][: args.steps]
        report["search_cost_run"] = {"answer_bearing_by_step": [h["fidelity"] for h in history],
                                     "real_calls": sum(h["real_calls"] for h in history),
                                     "probe_tokens": sum(h["probe_tokens"] for h in history)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, "search_cost", report, markdown(report), indent=1)


if __name__ == "__main__":
    main()

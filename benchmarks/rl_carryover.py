"""Does what RL learns carry over to held-out questions? For each RL run of one or more ``learning_bench.py``
outputs: greedy EM on the training questions the run trained on (its rollouts' questions up to the dev-chosen
checkpoint) and on the held-out test split, at its start and at that checkpoint, with the questions gained and lost,
overall and by kind (arithmetic, other no-search, 1-, 2- and 3-hop).

It reads what the benchmark wrote (``report.json`` and the evaluation records; the trained questions are its stage 6)
and runs nothing. Run: ``python benchmarks/rl_carryover.py --run NAME=BENCH_OUT [--run ...] --out DIR``; writes
``rl_carryover.{json,md}`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.learning_bench import NAMES, RL_START, ems_by_id, records_on, trained_ids  # noqa: E402
from benchmarks.learning_report import paired_change  # noqa: E402
from benchmarks.provenance import provenance, write_report  # noqa: E402

KINDS = ("arithmetic", "0-hop other", "1-hop", "2-hop", "3-hop")


def kind(record: dict) -> str:
    """The toy question's kind: arithmetic ("What is 6 plus 24?"), another no-search question, or its hop count."""
    if record.get("hops", 0) == 0:
        return "arithmetic" if " plus " in record["question"] else "0-hop other"
    return f"{record['hops']}-hop"


def change(before: list[dict], after: list[dict]) -> dict:
    """EM before and after, gained / lost with the sign test's p, overall and by :func:`kind`.

    >>> q = lambda i, em, hops=1: {"id": i, "question": "Q?", "hops": hops, "em": em}
    >>> c = change([q("a", 0.0), q("b", 1.0, 2)], [q("a", 1.0), q("b", 1.0, 2)])
    >>> c["questions"], c["start_em"], c["em"], c["gained"], c["lost"], c["by_kind"]["1-hop"]
    (2, 0.5, 1.0, 1, 0, {'questions': 1, 'start_em': 0.0, 'em': 1.0, 'gained': 1, 'lost': 0})
    """
    start, end = ems_by_id(before), ems_by_id(after)
    kinds = {r["id"]: kind(r) for r in before}
    by_kind = {}
    for name in KINDS:
        ids = [i for i in start if kinds[i] == name]
        if ids:
            sub = paired_change({i: start[i] for i in ids}, {i: end[i] for i in ids})
            by_kind[name] = {"questions": len(ids), "start_em": sum(start[i] for i in ids) / len(ids),
                             "em": sum(end[i] for i in ids) / len(ids), "gained": sub["gained"], "lost": sub["lost"]}
    return {"questions": len(start), "start_em": sum(start.values()) / len(start),
            "em": sum(end.values()) / len(end), **paired_change(start, end), "by_kind": by_kind}


def carryover(out: Path) -> dict[str, dict]:
    """Each RL run of one bench output: its chosen step, and :func:`change` on its trained and on the test
    questions."""
    report = json.loads((out / "report.json").read_text())
    keys = {name: key for key, name in NAMES.items()}
    runs = {}
    for name, rl in report["rl"].items():
        key = keys[name]
        if not rl.get("trained"):
            raise SystemExit(f"{out}/report.json: {name} has no trained-questions evaluation (a bench output from "
                             "before its stage 6: run learning_bench.py on this --out again; or a run without rollout "
                             "dumps)")
        asked = trained_ids(out, key)
        runs[name] = {"chosen_step": rl["chosen_step"],
                      "trained": change(*(records_on(out, f"trained-{key}", k, asked) for k in (RL_START, key))),
                      "test": change(*(records_on(out, "test", k) for k in (RL_START, key)))}
    return runs


def markdown(report: dict) -> str:
    lines = ["# Does what RL learns carry over? (toy world, SmolLM2-135M, CPU)", "",
             f"Commit `{report['commit']}`; command: `{report['command']}`.",
             "Greedy EM at the RL run's start (SFT-2+3) and at its dev-chosen checkpoint, on the training questions "
             "its rollouts asked up to that checkpoint (*trained*) and on the held-out test split (*test*); gained / "
             "lost "
             "questions with the exact two-sided sign test.", "",
             "| run | RL step | questions | trained EM start -> RL | gained / lost (p) | test EM start -> RL "
             "| gained / lost (p) |", "|---|---|---|---|---|---|---|"]
    for run, r in report["runs"].items():
        t, h = r["trained"], r["test"]
        lines.append(f"| {run} | {r['chosen_step']} | {t['questions']} / {h['questions']} | {t['start_em']:.3f} -> "
                     f"{t['em']:.3f} | +{t['gained']} / -{t['lost']} ({t['p']:.3f}) | {h['start_em']:.3f} -> "
                     f"{h['em']:.3f} | +{h['gained']} / -{h['lost']} ({h['p']:.3f}) |")
    lines += ["", "By kind of question (questions: EM start -> RL, gained / lost):", "",
              "| run | split | " + " | ".join(KINDS) + " |", "|---|---|" + "---|" * len(KINDS)]
    for run, r in report["runs"].items():
        for split in ("trained", "test"):
            cells = [(lambda k: f"{k['questions']}: {k['start_em']:.2f} -> {k['em']:.2f}, +{k['gained']}/-{k['lost']}")
                     (r[split]["by_kind"][name]) if name in r[split]["by_kind"] else "—" for name in KINDS]
            lines.append(f"| {run} | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=BENCH_OUT",
                        help="a learning_bench.py --out directory, named in the report (repeat for several)")
    parser.add_argument("--out", default="build/bench/rl_carryover", help="where rl_carryover.{json,md} go")
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.run:
        name, sep, path = spec.partition("=")
        if not sep or not name or not (Path(path) / "report.json").is_file():
            parser.error(f"--run {spec!r}: give NAME=DIR, DIR a learning_bench.py --out with report.json")
        for rl, measured in carryover(Path(path)).items():
            runs[f"{name}: {rl}"] = measured
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"runs": runs, **provenance("rl_carryover.py", argv)}
    write_report(out, "rl_carryover", report, markdown(report))


if __name__ == "__main__":
    main()

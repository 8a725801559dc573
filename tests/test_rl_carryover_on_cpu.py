"""The carry-over report: from a learning benchmark's report and records, trained and test questions side by side."""

import doctest
import json

import pytest

import benchmarks.rl_carryover as rl_carryover
from benchmarks.rl_carryover import change, kind, main


def _records(out, eval_name, key, rows):
    path = out / "eval" / eval_name / "records" / "toy"
    path.mkdir(parents=True, exist_ok=True)
    (path / f"agent ({key}).jsonl").write_text("".join(json.dumps({**r, "sample": 0}) + "\n" for r in rows))


def _bench_out(tmp_path, trained=True):
    out = tmp_path / "bench"
    out.mkdir()
    rl = {"chosen_step": 4, "trained": {"questions": 2} if trained else None}
    (out / "report.json").write_text(json.dumps({"rl": {"RL all-real": rl}}))
    arithmetic = {"id": "a", "question": "What is 6 plus 24?", "hops": 0}
    three_hop = {"id": "c", "question": "Who founded the city where X was born?", "hops": 3}
    (out / "rl" / "rl_real").mkdir(parents=True)
    (out / "rl" / "rl_real" / "trained_questions.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in (arithmetic, three_hop)))
    stale = {"id": "s", "question": "Asked at a step dev no longer chooses?", "hops": 1, "em": 1.0}
    _records(out, "trained-rl_real", "sft2_3", [{**arithmetic, "em": 0.0}, {**three_hop, "em": 1.0}, stale])
    _records(out, "trained-rl_real", "rl_real", [{**arithmetic, "em": 1.0}, {**three_hop, "em": 1.0}])
    test = [{"id": f"t{i}", "question": "Where was Y born?", "hops": 1} for i in range(4)]
    _records(out, "test", "sft2_3", [{**r, "em": float(i < 2)} for i, r in enumerate(test)])
    _records(out, "test", "rl_real", [{**r, "em": float(i in (1, 2, 3))} for i, r in enumerate(test)])
    return out


def test_doctests_pass():
    assert doctest.testmod(rl_carryover).failed == 0


def test_kinds_tell_arithmetic_from_other_no_search_questions():
    assert kind({"hops": 0, "question": "What is 6 plus 24?"}) == "arithmetic"
    assert kind({"hops": 0, "question": "What is the capital of X?"}) == "0-hop other"
    assert kind({"hops": 2, "question": "Where was the founder of Z born?"}) == "2-hop"


def test_the_report_sets_trained_and_test_questions_side_by_side(tmp_path):
    out = tmp_path / "report"
    main(["--run", f"s1={_bench_out(tmp_path)}", "--out", str(out)])
    report = json.loads((out / "rl_carryover.json").read_text())
    run = report["runs"]["s1: RL all-real"]
    assert run["chosen_step"] == 4
    assert {k: run["trained"][k] for k in ("questions", "start_em", "em", "gained", "lost")} == \
        {"questions": 2, "start_em": 0.5, "em": 1.0, "gained": 1, "lost": 0}
    assert run["trained"]["by_kind"]["arithmetic"] == {"questions": 1, "start_em": 0.0, "em": 1.0, "gained": 1,
                                                       "lost": 0}
    assert {k: run["test"][k] for k in ("questions", "start_em", "em", "gained", "lost")} == \
        {"questions": 4, "start_em": 0.5, "em": 0.75, "gained": 2, "lost": 1}
    md = (out / "rl_carryover.md").read_text()
    assert "| s1: RL all-real | 4 | 2 / 4 | 0.500 -> 1.000 | +1 / -0 (1.000) | 0.500 -> 0.750 | +2 / -1 (1.000) |" in md
    assert "| s1: RL all-real | trained | 1: 0.00 -> 1.00, +1/-0 | — | — | — | 1: 1.00 -> 1.00, +0/-0 |" in md
    assert report["command"].startswith("python benchmarks/rl_carryover.py --run s1=")


def test_a_bench_output_without_the_trained_stage_or_a_bad_run_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"report.json: RL all-real has no trained-questions evaluation"):
        main(["--run", f"s1={_bench_out(tmp_path, trained=False)}", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit):
        main(["--run", str(tmp_path), "--out", str(tmp_path / "r")])
    assert "give NAME=DIR" in capsys.readouterr().err
    assert change([{"id": "q", "question": "Q?", "hops": 1, "em": 1.0}],
                  [{"id": "q", "question": "Q?", "hops": 1, "em": 1.0}])["lost"] == 0

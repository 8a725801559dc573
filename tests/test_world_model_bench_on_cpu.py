"""The world-model benchmark's pieces: which checkpoints it measures, its report, its command line."""

import json
import subprocess
import sys

from benchmarks.world_model_bench import ROOT, learning_models, markdown


def _export(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")


def test_learning_models_in_training_order(tmp_path):
    ckpt = tmp_path / "checkpoints"
    for step in (20, 60):
        _export(ckpt / "SFT-2" / f"global_step_{step}" / "huggingface")
    _export(ckpt / "SFT-2+3" / "global_step_10" / "huggingface")
    for step in (8, 16):
        _export(ckpt / "rl_real" / f"global_step_{step}" / "actor" / "huggingface")
    (ckpt / "rl_mixed" / "global_step_8" / "actor").mkdir(parents=True)  # no HF export: skipped
    models = learning_models(tmp_path)
    assert list(models) == ["SFT-2", "SFT-2+3", "RL all-real step 8", "RL all-real step 16"]
    assert models["SFT-2"] == ckpt / "SFT-2" / "global_step_60" / "huggingface"


def test_markdown_row():
    coa = {"coa/fidelity/answer_bearing": 0.25, "coa/fidelity/token_f1": 0.5, "coa/fidelity/rouge_l": 0.4,
           "coa/fidelity/checked": 8}
    part = lambda p, s: {"pass_rate": p, "searches_per_q": s, "coa": coa,  # noqa: E731
                         "cost": {"cost/simulated_observations": 8, "cost/simulated_gen_s": 16.0,
                                  "cost/real_calls": 4, "cost/real_latency_s": 0.08}}
    report = {"commit": "abc", "command": "python benchmarks/world_model_bench.py", "wall_s": 5, "questions": 4,
              "temperature": 1.0, "response_length": 768,
              "models": {"SFT-2+3": {"simulated": part(0.25, 2.0), "real": part(0.75, 1.5)}}}
    assert "| SFT-2+3 | 0.250 | 0.500 | 0.400 | — | 8 | 0.250 | 0.750 | 2.00 / 1.50 | 2.00 | 0.020 |" in markdown(report)


def test_help_and_a_missing_model_are_one_line_errors(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "benchmarks/world_model_bench.py", *a], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    assert run("--help").returncode == 0
    result = run("--model", f"x={tmp_path}", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and f"--model x={tmp_path}: no Hugging Face model there" in result.stderr


def test_the_search_cost_run_says_what_it_needs(tmp_path):
    run = lambda *a: subprocess.run(["bash", "benchmarks/search_cost_run.sh", *a], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    assert run("--help").returncode == 0 and "search_cost=0.1" in run("--help").stdout
    result = run(str(tmp_path))
    assert result.returncode == 2
    assert f"{tmp_path}/checkpoints/SFT-2+3 is missing (run make bench-learning first)" in result.stderr


def test_search_cost_report_counts_over_search_by_hops(tmp_path):
    from benchmarks.search_cost_report import test_rows, training_curve

    dumps = tmp_path / "rollouts"
    dumps.mkdir()
    prompt = "user\nAnswer ...\nQuestion: {}\nassistant\n"
    rows = [{"input": prompt.format("Q1"), "em": 1.0, "searches": 3}, {"input": prompt.format("Q2"), "em": 0.0,
                                                                       "num_searches": 0}]
    (dumps / "1.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    curve = training_curve(dumps, 1, {"Q1": 1, "Q2": 0})
    assert curve == {"em": [0.5], "searches": [1.5], "over_search": [0.5]}
    records = tmp_path / "records"
    records.mkdir()
    test = [{"em": 1.0, "searches": 2, "hops": 2, "acted_when_needed": True},
            {"em": 0.0, "searches": 2, "hops": 1, "acted_when_needed": True},
            {"em": 1.0, "searches": 1, "hops": 0, "acted_when_needed": False}]
    (records / "agent (m).jsonl").write_text("\n".join(json.dumps(r) for r in test) + "\n")
    m = test_rows(records)["m"]
    assert m["over_search"] == 2 / 3 and m["when_to_act"] == 2 / 3 and m["by_hops"]["1"]["over_search"] == 1.0
    assert m["by_hops"]["2"] == {"questions": 1, "em": 1.0, "searches": 2, "over_search": 0.0}

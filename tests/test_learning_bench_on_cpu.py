"""The learning benchmark's pieces (its whole run takes hours: benchmarks/learning_bench.py --quick is the smoke)."""

import json
import subprocess
import sys

import pytest

from benchmarks.learning_bench import (ROOT, Bench, _parser, best_sft, choose_budget, ems_by_id, records_on,
                                      trained_questions)
from benchmarks.learning_report import (check_report, early_stops, markdown, paired_change, plot, report_row,
                                        reward_windows, sign_test, targets)


def _summary(em, hops=None):
    return {"em": em, "f1": em, "searches": 1.0, "when_to_act": 0.9,
            "em_by_hops": {str(h): {"questions": 1, "em": v} for h, v in (hops or {}).items()}}


def test_budget_is_the_best_dev_em_with_the_fewest_steps():
    assert choose_budget({30: 0.4, 60: 0.7, 90: 0.7, 120: 0.65}) == 60
    assert choose_budget({30: 0.7, 60: 0.5}) == 30


def test_an_rl_run_is_evaluated_on_dev_at_each_checkpoint_and_the_best_is_chosen(tmp_path, monkeypatch):
    bench = Bench(_parser().parse_args(["--out", str(tmp_path), "--dev-questions", "7"]))
    ckpt = tmp_path / "checkpoints" / "rl_real"
    for step in (8, 16, 24):
        (ckpt / f"global_step_{step}" / "actor" / "huggingface").mkdir(parents=True)
        (ckpt / f"global_step_{step}" / "actor" / "huggingface" / "config.json").write_text("{}")
    (ckpt / "global_step_32" / "actor").mkdir(parents=True)  # unfinished: no HF export
    calls = []

    def evaluate(name, models, split, limit):
        calls.append((name, sorted(models), split, limit))
        return {"agent (step8)": {"em": 0.5}, "agent (step16)": {"em": 0.7}, "agent (step24)": {"em": 0.7}}

    monkeypatch.setattr(bench, "evaluate", evaluate)
    curve, step, path = bench.choose_rl_checkpoint("rl_real")
    assert calls == [("dev-rl_real", ["step16", "step24", "step8"], "dev", 7)]
    assert curve == {8: 0.5, 16: 0.7, 24: 0.7} and step == 16  # the fewest steps on a tie
    assert path == ckpt / "global_step_16" / "actor" / "huggingface"
    for step in (8, 24):
        (ckpt / f"global_step_{step}" / "actor" / "huggingface" / "config.json").unlink()
    assert bench.choose_rl_checkpoint("rl_real") == ({}, 16, path) and len(calls) == 1  # one: nothing to choose


def test_an_evaluation_sets_aside_the_records_of_a_checkpoint_dev_no_longer_chooses(tmp_path, monkeypatch):
    bench = Bench(_parser().parse_args(["--out", str(tmp_path)]))
    commands = []

    def call(name, cmd):
        commands.append(cmd)
        (tmp_path / "eval" / "test").mkdir(parents=True)
        (tmp_path / "eval" / "test" / "summary.json").write_text(json.dumps({"toy": {"agent (rl_real)": {}}}))

    monkeypatch.setattr(bench, "call", call)
    assert bench.evaluate("test", {"rl_real": tmp_path / "rl"}, "test", None) == {"agent (rl_real)": {}}
    (cmd,) = commands
    assert "superseded=set_aside" in cmd


def test_an_sft_stage_is_chosen_on_dev_and_sft3_trains_at_its_own_lr(tmp_path, monkeypatch):
    bench = Bench(_parser().parse_args(["--out", str(tmp_path), "--dev-questions", "7", "--lr", "1e-4",
                                        "--sft3-lr", "3e-5"]))
    calls = []

    def evaluate(name, models, split, limit):
        calls.append((name, sorted(models), split, limit))
        return {"agent (step10)": {"em": 0.84}, "agent (step20)": {"em": 0.81}, "agent (step30)": {"em": 0.92}}

    monkeypatch.setattr(bench, "evaluate", evaluate)
    curve, step, path = bench.choose_sft_checkpoint("SFT-2+3", 30, 10)
    assert calls == [("dev-sft2_3", ["step10", "step20", "step30"], "dev", 7)]  # the eval name resumes old runs
    assert curve == {10: 0.84, 20: 0.81, 30: 0.92} and step == 30
    assert path == tmp_path / "checkpoints" / "SFT-2+3" / "global_step_30" / "huggingface"
    assert bench.choose_sft_checkpoint("SFT-2", 60, 60) == ({}, 60, tmp_path / "checkpoints" / "SFT-2" /
                                                            "global_step_60" / "huggingface") and len(calls) == 1

    commands = []
    monkeypatch.setattr(bench, "call", lambda name, cmd: commands.append(cmd))
    bench.pairs = bench.trajectories = tmp_path / "t.parquet"
    bench.sft("SFT-2", 2, tmp_path, 60, 20)
    bench.sft("SFT-2+3", 3, tmp_path, 30, 10, 3e-5)
    assert "optim.lr=0.0001" in commands[0] and "optim.lr=3e-05" in commands[1]
    assert "trainer.save_freq=10" in commands[1]


def test_the_read_stage_runs_once_on_the_corpus_and_returns_its_export(tmp_path, monkeypatch):
    bench = Bench(_parser().parse_args(["--out", str(tmp_path), "--toy", str(tmp_path / "toy"), "--read-epochs", "3"]))
    commands, ckpt = [], tmp_path / "checkpoints" / "read"

    def call(name, cmd):  # what verl's trainer leaves: the marker and the last step's HF export
        commands.append((name, cmd))
        (ckpt / "global_step_81" / "huggingface").mkdir(parents=True)
        (ckpt / "global_step_81" / "huggingface" / "config.json").write_text("{}")
        (ckpt / "latest_checkpointed_iteration.txt").write_text("81")

    monkeypatch.setattr(bench, "call", call)
    assert bench.read(3) == ckpt / "global_step_81" / "huggingface"
    (name, cmd), = commands
    assert name == "read" and cmd[cmd.index("--config-name") + 1] == "sft_read"
    assert f"data.train_files={tmp_path / 'toy' / 'corpus.jsonl'}" in cmd and "trainer.total_epochs=3" in cmd
    assert bench.read(3) == ckpt / "global_step_81" / "huggingface" and len(commands) == 1  # done: reused


def test_the_oracle_plan_reaches_the_oracle_and_a_changed_plan_is_refused_on_resume(tmp_path, monkeypatch):
    toy, model = tmp_path / "toy", tmp_path / "model"
    for d, name in ((toy, "manifest.json"), (model, "config.json")):
        d.mkdir()
        (d / name).write_text("{}")
    args = ["--out", str(tmp_path / "out"), "--toy", str(toy), "--model", str(model)]
    bench = Bench(_parser().parse_args(args + ["--oracle-plan", "count"]))
    commands = []

    def call(name, cmd):  # the oracle writes its two files
        commands.append(cmd)
        (tmp_path / "out" / "sft").mkdir(exist_ok=True)
        bench.pairs.write_text("")

    monkeypatch.setattr(bench, "call", call)
    bench.data()
    (cmd,) = commands
    assert cmd[cmd.index("--plan") + 1] == "count"
    bench.data()  # the same plan: reused
    assert len(commands) == 1
    with pytest.raises(SystemExit, match="written with --oracle-plan count, not state; use a new --out"):
        Bench(_parser().parse_args(args)).data()  # the default plan: state
    (tmp_path / "out" / "sft" / "oracle_plan.txt").unlink()  # data from before the plan was recorded: count
    with pytest.raises(SystemExit, match="written with --oracle-plan count, not state"):
        Bench(_parser().parse_args(args)).data()


@pytest.mark.parametrize("flag, mode", [([], "off"), (["--curriculum-greedy-wrong"], "wrong"),
                                        (["--curriculum-greedy", "balanced"], "balanced")])
def test_the_curriculum_mode_reaches_the_curriculum_and_a_changed_mode_is_refused_on_resume(tmp_path, monkeypatch,
                                                                                            flag, mode):
    bench = Bench(_parser().parse_args(["--out", str(tmp_path), "--curriculum-questions", "512", *flag]))
    commands = []

    def call(name, cmd):
        commands.append(cmd)
        (tmp_path / "rl" / "curriculum.parquet").write_text("")

    monkeypatch.setattr(bench, "call", call)
    (tmp_path / "rl").mkdir()
    path = bench.curriculum(tmp_path / "sft3")
    (cmd,) = commands
    assert cmd[cmd.index("--limit") + 1] == "512"
    assert [a for a in cmd if a.startswith("--greedy")] == ([] if mode == "off" else [f"--greedy-{mode}"])
    assert bench.curriculum(tmp_path / "sft3") == path and len(commands) == 1  # the same mode: reused
    other = "balanced" if mode != "balanced" else "off"
    with pytest.raises(SystemExit, match=f"written with --curriculum-greedy {mode}, not {other}; use a new --out"):
        Bench(_parser().parse_args(["--out", str(tmp_path), "--curriculum-greedy", other])).curriculum(path)


def test_a_curriculum_from_before_the_mode_was_recorded_reads_its_mode_from_its_rates(tmp_path):
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "curriculum.parquet").write_text("")
    rates = tmp_path / "rl" / "curriculum.pass_rates.jsonl"
    rates.write_text(json.dumps({"id": "q", "greedy": 0.0, "pass_rate": 0.5}) + "\n")
    bench = Bench(_parser().parse_args(["--out", str(tmp_path), "--curriculum-greedy-wrong"]))
    assert bench.curriculum(tmp_path / "sft3") == tmp_path / "rl" / "curriculum.parquet"
    rates.write_text(json.dumps({"id": "q", "pass_rate": 0.5}) + "\n")
    with pytest.raises(SystemExit, match="written with --curriculum-greedy off, not wrong"):
        bench.curriculum(tmp_path / "sft3")


def test_bad_read_epochs_are_refused():
    out = subprocess.run([sys.executable, "benchmarks/learning_bench.py", "--read-epochs", "-1"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--read-epochs must be >= 0, got -1" in out.stderr


def test_each_rl_schedule_runs_from_the_same_start_with_its_own_overrides(tmp_path, monkeypatch):
    bench = Bench(_parser().parse_args(["--out", str(tmp_path), "--rl-schedules", "fidelity,mixed"]))
    assert bench.args.rl_schedules == ["fidelity", "mixed"]
    commands = {}

    def call(name, cmd):
        commands[name] = cmd
        (tmp_path / "logs" / f"{name}.log").write_text("")

    monkeypatch.setattr(bench, "call", call)
    for key in ("rl_real", "rl_fidelity", "rl_mixed"):
        assert bench.rl(key, tmp_path / "sft3", tmp_path / "data.parquet") == {}
    config = {name: cmd[cmd.index("--config-name") + 1] for name, cmd in commands.items()}
    assert config == {"rl_real": "rl_stage2", "rl_fidelity": "rl_mixed", "rl_mixed": "rl_mixed"}
    assert {"coa.schedule.kind=fidelity", "coa.schedule.calibration_sample=0.3",
            "coa.schedule.max_simulated_share=1.0"} <= set(commands["rl_fidelity"])
    assert not any(arg.startswith("coa.schedule") for key in ("rl_real", "rl_mixed") for arg in commands[key])
    assert all(f"actor_rollout_ref.model.path={tmp_path / 'sft3'}" in cmd for cmd in commands.values())
    assert all(f"coa.world_model.fidelity_corpus={bench.toy / 'corpus.jsonl'}" in cmd for cmd in commands.values())


@pytest.mark.parametrize("schedules", ["fidelity,fidelity", "real", "ratio"])
def test_unknown_or_repeated_rl_schedules_are_refused(schedules, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--rl-schedules", schedules])
    assert "expected a comma-separated subset of mixed,fidelity" in capsys.readouterr().err


def test_best_sft_row_is_chosen_on_dev_and_the_rl_start_wins_ties():
    assert best_sft({"sft2": 0.76, "sft2_3": 0.70}) == "sft2"
    assert best_sft({"sft2": 0.70, "sft2_3": 0.72}) == "sft2_3"
    assert best_sft({"sft2": 0.70, "sft2_3": 0.70}) == "sft2_3"
    assert best_sft({"sft2": None, "sft2_3": None}) == "sft2_3"


def test_sign_test_is_exact_and_two_sided():
    assert sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0
    assert sign_test(5, 0) == sign_test(0, 5) == 2 / 32
    assert abs(sign_test(34, 17) - 0.0244) < 1e-3 and abs(sign_test(5, 16) - 0.0266) < 1e-3


def test_paired_change_counts_questions_and_refuses_different_question_sets(tmp_path):
    records = tmp_path / "eval" / "test" / "records" / "toy"
    records.mkdir(parents=True)
    rows = [{"id": "q1", "sample": 0, "em": 1.0}, {"id": "q2", "sample": 0, "em": 0.0}, {"id": "q1", "sample": 1,
                                                                                          "em": 0.0}]
    (records / "agent (sft2).jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = ems_by_id(records_on(tmp_path, "test", "sft2"))
    assert before == {"q1": 1.0, "q2": 0.0}  # the greedy sample only
    assert paired_change(before, {"q1": 0.0, "q2": 1.0}) == {"gained": 1, "lost": 1, "p": 1.0}
    with pytest.raises(ValueError, match="different questions"):
        paired_change(before, {"q1": 1.0})


def _dump(path, questions):
    prompt = "user\nAnswer the given question.\nQuestion: {}\nassistant\n"
    row = {"output": "", "score": 0.0, "step": int(path.stem)}
    path.write_text("".join(json.dumps({"input": prompt.format(q), **row}) + "\n" for q in questions))


def test_trained_questions_are_the_training_rows_the_rollouts_asked_up_to_the_step(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"id": f"t{i}", "question": f"Q{i}?", "golden_answers": [str(i)]}) + "\n"
                             for i in range(5)))
    dumps = tmp_path / "rollouts"
    dumps.mkdir()
    _dump(dumps / "1.jsonl", ["Q3?", "Q3?", "Q1?"])  # n samples of each question
    _dump(dumps / "3.jsonl", ["Q1?", "Q4?"])  # step 2 was not dumped
    _dump(dumps / "4.jsonl", ["Q0?"])  # after the chosen step
    assert [r["id"] for r in trained_questions(dumps, 3, train)] == ["t3", "t1", "t4"]
    assert trained_questions(tmp_path / "none", 3, train) == []
    _dump(dumps / "3.jsonl", ["Q1?", "Not a training question?"])
    with pytest.raises(ValueError, match=r"rollouts/3.jsonl:2: input: no question of .*train.jsonl"):
        trained_questions(dumps, 3, train)


def test_an_rl_run_is_evaluated_on_its_trained_questions_from_its_start(tmp_path, monkeypatch):
    toy = tmp_path / "toy"
    toy.mkdir()
    (toy / "train.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "question": f"Q{i}?",
                                                         "golden_answers": ["x"]}) + "\n" for i in range(3)))
    bench = Bench(_parser().parse_args(["--out", str(tmp_path / "out"), "--toy", str(toy)]))
    (bench.out / "rl" / "rl_real" / "rollouts").mkdir(parents=True)
    _dump(bench.out / "rl" / "rl_real" / "rollouts" / "1.jsonl", ["Q2?", "Q0?"])
    calls = []

    def evaluate(name, models, split, limit):
        calls.append((name, models, split, limit))
        records = bench.out / "eval" / name / "records" / "toy"
        records.mkdir(parents=True)
        # the start's resumed records also hold t1, which an earlier choice of step asked
        for key, ids, ems in (("sft2_3", ["t2", "t0", "t1"], [0.0, 1.0, 1.0]), ("rl_real", ["t2", "t0"], [1.0, 1.0])):
            (records / f"agent ({key}).jsonl").write_text("".join(
                json.dumps({"id": i, "sample": 0, "em": em}) + "\n" for i, em in zip(ids, ems)))
        return {"agent (sft2_3)": {"em": 2 / 3}, "agent (rl_real)": {"em": 1.0}}

    monkeypatch.setattr(bench, "evaluate", evaluate)
    trained = bench.evaluate_trained("rl_real", tmp_path / "sft", tmp_path / "rl", 1)
    questions = bench.out / "rl" / "rl_real" / "trained_questions.jsonl"
    assert calls == [("trained-rl_real", {"sft2_3": tmp_path / "sft", "rl_real": tmp_path / "rl"}, questions, None)]
    assert [json.loads(line)["id"] for line in questions.read_text().splitlines()] == ["t2", "t0"]
    assert trained == {"questions": 2, "to_step": 1, "start_em": 0.5, "em": 1.0, "gained": 1, "lost": 0, "p": 1.0}


def test_early_stops_count_search_questions_answered_after_too_few_searches():
    records = [{"hops": 3, "searches": 2}, {"hops": 3, "searches": 4}, {"hops": 1, "searches": 0},
               {"hops": 2, "searches": 2}, {"hops": 0, "searches": 1}]
    assert early_stops(records) == 0.5  # 2 of the 4 search questions; the no-search question does not count
    assert early_stops([{"hops": 0, "searches": 0}]) is None
    assert report_row("SFT-2", _summary(0.5), stopped_early=0.25)["stopped_early"] == 0.25


def test_reward_windows_average_the_first_and_last_steps():
    assert reward_windows([0.0, 1.0]) == (0.5, 0.5)
    assert reward_windows([0.0] * 5 + [1.0] * 5) == (0.0, 1.0)


def test_report_carries_every_key_and_checks_the_targets():
    rows = [report_row("react_fewshot", _summary(0.1)), report_row("SFT-2", _summary(0.62, {1: 0.95, 2: 0.6, 3: 0.3})),
            report_row("SFT-2+3", _summary(0.6)), report_row("RL all-real", _summary(0.7), 400),
            report_row("RL 5:1", _summary(0.68), 60), report_row("RL fidelity-gated", _summary(0.69), 90)]
    rl = {"steps": [1, 2], "reward": [0.2, 0.4], "reward_first5": 0.2, "reward_last5": 0.4, "real_calls": 400,
          "check_calls": 0, "simulated_observations": 0, "zero_variance_share": [0.5, None], "step_s": [1.0, 1.0]}
    gated = {**rl, "fidelity_answer_bearing": [0.5, 0.625, 0.75], "fidelity_checked": [9, 8, 3],
             "source": ["simulated", "simulated", "real"], "calibrating": [True, False, False], "check_calls": 20}
    trained = {**rl, "trained": {"questions": 30, "to_step": 2, "start_em": 0.5, "em": 0.8, "gained": 10,
                                 "lost": 1, "p": 0.01}}
    report = {"rows": rows, "best_sft_name": "SFT-2", "best_sft_em": 0.62, "rl_start": "SFT-2+3", "rl_start_em": 0.6,
              "rl_all_real_em": 0.7, "rl_mixed_em": 0.68, "rl_reward_first5": 0.2, "rl_reward_last5": 0.4,
              "all_real_calls": 400, "mixed_real_calls": 60, "react_fewshot_em": 0.1, "sft_curve": {"30": 0.62},
              "sft2_budget": 30, "sft3_curve": {"10": 0.5, "20": 0.6}, "sft3_budget": 20, "rl": {"RL all-real": trained, "RL 5:1": rl,
                                                                                  "RL fidelity-gated": gated},
              "rl_fidelity_em": 0.69, "fidelity_real_calls": 90, "test_questions": 200,
              "rl_questions_kept": 40, "settings": {"batch": 8, "lr": 1e-4, "sft3_lr": 3e-5, "dev_questions": 100, "rl_steps": 2,
                                                    "rl_questions": 4, "rl_n": 8, "rl_lr": 1e-5,
                                                    "rl_temperature": 1.0},
              "wall_s": 10.0, "commit": "abc", "command": "python benchmarks/learning_bench.py"}
    check_report(report)
    with pytest.raises(KeyError, match="rl_mixed_em"):
        check_report({k: v for k, v in report.items() if k != "rl_mixed_em"})
    report["targets"] = targets(report)
    text = "\n".join(report["targets"])
    assert "best SFT (SFT-2) EM >= 0.60: 0.620 (met); 1-hop EM >= 0.90: 0.950 (met); 2-hop EM >= 0.60: 0.600 (met)" \
        in text and "when-to-act >= 0.95: 0.900 (NOT met)" in text
    assert "RL all-real >= +0.05 EM over its start: +0.100 (met)" in text
    assert "RL reward last-5 >= first-5 + 0.10: 0.400 vs 0.200 (met)" in text
    assert "gap +0.020; >= 80% fewer real calls: 85.0% (met)" in text
    assert "fidelity-gated within 0.02 EM of all-real: gap +0.010; fewer real calls than 5:1: 90 vs 60 (NOT met)" in text
    assert "few-shot ReAct by >= 0.20 EM: +0.600 (met)" in text
    assert "whole benchmark in about 2 h (stage wall time <= 7200 s): 10 s (met)" in text
    assert "7201 s (NOT met)" in "\n".join(targets({**report, "wall_s": 7201.0}))
    alone = targets({**report, "rl_mixed_em": None, "mixed_real_calls": None})
    assert "fewer real calls than 5:1: 5:1 not run, not measured (NOT met)" in "\n".join(alone)
    md = markdown(report)
    assert "| SFT-2 | 0.620 | 0.620 | — | 0.950 | 0.600 | 0.300 | 0.900 | 1.00 | — | — |" in md
    assert "lr 0.0001 (SFT-3: 3e-05); budgets chosen on the dev split (100 questions): SFT-2 30 steps, SFT-3 20" in md
    assert "SFT-3 curve (dev EM by steps): 10: 0.500, 20: 0.600" in md
    assert "| RL all-real | 0.700 |" in md and "zero-variance group share per step 0.50, —" in md
    assert ("real retriever calls 400 (20 of them fidelity checks), simulated observations 0; per step source (s: "
            "simulated, c: simulated calibration step, R: real) csR, world-model answer-bearing 0.50 of 9, 0.62 of 8, "
            "0.75 of 3") in md
    assert md.count("world-model answer-bearing") == 1  # only the run that measured it
    assert ("simulated observations 0; on the 30 training questions its rollouts asked up to step 2 (greedy), EM "
            "0.500 at its start -> 0.800 (+10 / -1)") in md and md.count("training questions its rollouts") == 1
    assert "read stage" not in md and "Best SFT row" not in md and "Paired" not in md
    report.update(best_sft_dev_em=0.76, paired=[{"from": "SFT-2+3", "to": "RL all-real", "gained": 15, "lost": 14,
                                                 "p": 1.0}])
    md = markdown(report)
    assert "Best SFT row: SFT-2, the SFT row with the highest dev EM at its chosen step (0.760); RL starts from " \
           "SFT-2+3." in md
    assert "- SFT-2+3 -> RL all-real: +15 / -14, p = 1.000" in md
    report["settings"]["read_epochs"] = 10
    assert "baselines included: the base model after the read stage (10 epochs" in markdown(report)
    json.dumps(report)  # the report is plain JSON


def test_curves_plot_the_world_models_fidelity_where_the_runs_logged_it(tmp_path):
    from matplotlib.image import imread

    rl = {"steps": [1, 2, 3], "reward": [0.2, 0.4, 0.5], "fidelity_answer_bearing": [None, 0.25, 0.5]}
    report = {"rl": {"RL 5:1": rl}, "sft_curve": {"20": 0.5}, "rows": [{"name": "SFT-2", "em": 0.5}]}
    plot(report, tmp_path / "with.png")
    plot({**report, "rl": {"RL 5:1": {**rl, "fidelity_answer_bearing": [None] * 3}}}, tmp_path / "without.png")
    # a fourth panel where fidelity was logged: a wider figure (20 x 4 in at 100 dpi, against 15 x 4)
    assert imread(tmp_path / "with.png").shape[1] == 2000 and imread(tmp_path / "without.png").shape[1] == 1500


def test_help_runs():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "learning_bench.py"), "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--quick" in out.stdout

"""Does the pipeline teach? SFT and RL on the toy world, measured on held-out questions with the training scorer.

Stages (each resumable: a finished stage's outputs are reused on a re-run with the same ``--out``):
1. data: toy world, SmolLM2, bm25 index, oracle trajectories and pairs (observations: the retriever's top-3).
   With ``--read-epochs N``, the read stage (``make sft-read``: next-token loss on the corpus, N epochs) turns
   SmolLM2 into the start of every row, baselines included: a model that knows the world, as an LLM knows Wikipedia.
2. SFT-2 from the start model, a checkpoint every ``--save-every`` steps; the agent's EM on the *dev* split at each
   checkpoint gives the SFT curve, and the budget is chosen from it (best dev EM, fewest steps on a tie).
3. SFT-3 (world model) from the chosen SFT-2, at its own lr (``--sft3-lr``), a checkpoint every
   ``--sft3-save-every`` steps and its budget chosen on dev the same way; optionally SFT-1 and SFT-1+2
   (``--sft12-steps``).
4. RL curriculum: the SFT-3 model's pass rate on training questions; keep 0 < pass < 1 (``--curriculum-greedy``:
   only among the questions it answers wrong greedily, or both kinds alternating).
5. GRPO from SFT-3 with all-real observations, then once per schedule of ``--rl-schedules`` with the same questions
   and settings: 5:1 simulated:real (``mixed``) and the fidelity-gated schedule (``fidelity``); a checkpoint every
   ``--rl-save-every`` steps, and where there are several, each run's model is chosen by its dev EM (as SFT-2's).
6. After each RL run, its trained questions (greedy): the start and the chosen checkpoint on the training questions
   the run's rollouts asked up to that checkpoint. Does RL learn what it trains on? Beside the test split's change,
   whether that carries over to held-out questions.
7. Test split (all questions, greedy): the base model with direct / CoT / RAG / ReAct zero- and few-shot, and the
   agent on every model. The report's best SFT row is the SFT row with the highest dev EM; its paired comparisons
   count the test questions each model gained and lost against another, with an exact sign test.

Run: ``make bench-learning`` or ``python benchmarks/learning_bench.py --out build/bench/learning [--quick] [--help]``.
Writes ``report.json``, ``report.md`` and ``curves.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.learning_report import (check_report, early_stops, markdown, paired_change, plot,  # noqa: E402
                                        report_row, reward_windows, targets)
from autocoa_verl.data.curriculum import GREEDY_MODES  # noqa: E402
from autocoa_verl.data.oracle import PLANS  # noqa: E402
from benchmarks.provenance import provenance, write_report  # noqa: E402

BASELINES = ["direct", "cot", "rag", "react", "react_fewshot"]
# model key (a Hydra-safe name for evaluation) -> the report's row name
NAMES = {"base": "base (agent)", "sft2": "SFT-2", "sft1_2": "SFT-1+2", "sft2_3": "SFT-2+3", "sft1_2_3": "SFT-1+2+3",
         "rl_real": "RL all-real", "rl_mixed": "RL 5:1", "rl_fidelity": "RL fidelity-gated"}
# RL run key -> its config and overrides; the runs differ only in where observations come from
# 5:1 checks 5% of its simulated observations against the retriever (the default 10% would be ~30 of its ~80 real
# calls); the report counts those checks in its real calls
RL_RUNS = {"rl_real": ("rl_stage2", ()), "rl_mixed": ("rl_mixed", ("coa.world_model.fidelity_sample=0.05",)),
           # the gate starts simulated: calibration steps (30% of their simulated observations checked) buy the
           # evidence, 15% of a plain simulated step's keep ~8 checks in its window of 2 steps, and only a drop in
           # fidelity sends a step real (no share cap)
           "rl_fidelity": ("rl_mixed", ("coa.schedule.kind=fidelity", "coa.schedule.calibration_sample=0.3",
                                        "coa.schedule.max_simulated_share=1.0", "coa.world_model.fidelity_sample=0.15"))}
RL_START = "sft2_3"  # both RL runs start from SFT-2+3, the method's last SFT stage
# the report's paired comparisons on the test questions (model keys: before -> after), where both were evaluated
PAIRED = [("sft2", "sft2_3"), (RL_START, "rl_real"), (RL_START, "rl_mixed"), (RL_START, "rl_fidelity"),
          ("rl_real", "rl_mixed"), ("rl_real", "rl_fidelity")]


def choose_budget(curve: dict[int, float]) -> int:
    """The SFT step count with the best dev EM; the fewest steps on a tie.

    >>> choose_budget({30: 0.5, 60: 0.62, 90: 0.62, 120: 0.6})
    60
    """
    if not curve:
        raise ValueError("choose_budget: no checkpoints evaluated")
    best = max(curve.values())
    return min(step for step, em in curve.items() if em == best)


class Bench:
    """The stages, with their outputs under ``out`` and a log per subprocess."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.out = args, Path(args.out).resolve()
        self.toy, self.base = Path(args.toy).resolve(), Path(args.model).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        self.url = ""

    # --- running ---------------------------------------------------------------------------------------------
    def call(self, name: str, cmd: list[str]) -> str:
        """Runs one stage's command; its wall time is added to ``timings.json`` (kept across resumed runs)."""
        log_path = self.out / "logs" / f"{name}.log"
        print(f"[{name}] running ({log_path})", flush=True)
        start = time.perf_counter()
        with open(log_path, "a") as log:  # a resumed stage keeps the earlier attempt's lines (RL step metrics)
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""} if self.args.device == "cpu" else None
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        if code:
            tail = "".join(open(log_path).readlines()[-20:])
            raise SystemExit(f"[{name}] failed (exit {code}); end of {log_path}:\n{tail}")
        wall = time.perf_counter() - start
        timings_path = self.out / "timings.json"
        timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
        timings[name] = timings.get(name, 0.0) + wall
        timings_path.write_text(json.dumps(timings, indent=2))
        print(f"[{name}] done in {wall:.0f} s", flush=True)
        return log_path.read_text()

    def data(self) -> None:
        from autocoa_verl.data.toy_world import ToyWorldConfig, build_toy_world

        if not (self.toy / "manifest.json").is_file():
            build_toy_world(ToyWorldConfig(), self.toy, progress=False)
        if not (self.base / "config.json").is_file():
            from autocoa_verl.models.smollm2 import materialize_smollm2

            materialize_smollm2(self.base)
        self.trajectories, self.pairs = self.out / "sft" / "trajectories.parquet", self.out / "sft" / "pairs.parquet"
        # the oracle's plan style, beside its data (written before --oracle-plan existed: "count")
        plan_path = self.out / "sft" / "oracle_plan.txt"
        if self.pairs.is_file():
            check_written_with(plan_path, "--oracle-plan", self.args.oracle_plan, lambda: "count")
        else:
            self.call("oracle", [sys.executable, "-m", "autocoa_verl.data.oracle", str(self.toy / "train.jsonl"),
                                 str(self.toy / "corpus.jsonl"), str(self.trajectories), "--pairs", str(self.pairs),
                                 "--tokenizer", str(self.base), "--index-dir", str(self.out / "bm25-index"),
                                 "--plan", self.args.oracle_plan])
            plan_path.write_text(self.args.oracle_plan + "\n")

    def read(self, epochs: int) -> Path:
        """The read stage (``recipes/sft.py --config-name sft_read``, as ``make sft-read``) from the base model for
        ``epochs`` epochs over the corpus; returns its HF export (reused when it exists)."""
        from autocoa_verl.sft.trainer import latest_hf_checkpoint

        ckpt = self.out / "checkpoints" / "read"
        if not (ckpt / "latest_checkpointed_iteration.txt").is_file():
            a = self.args
            device = ["+platform=sft_cpu"] if a.device == "cpu" else ["data.micro_batch_size_per_gpu=16"]
            self.call("read", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                               str(ROOT / "recipes" / "sft.py"), "--config-name", "sft_read", *device,
                               f"data.train_files={self.toy / 'corpus.jsonl'}", f"model.path={self.base}",
                               f"trainer.total_epochs={epochs}",
                               *(["trainer.total_training_steps=2"] if a.quick else []),
                               "checkpoint.save_contents=[model,hf_model]", f"trainer.default_local_dir={ckpt}",
                               f"hydra.run.dir={self.out / 'hydra' / 'read'}"])
        return latest_hf_checkpoint(ckpt)

    def sft(self, name: str, stage: int, start: Path, steps: int, save_every: int | None = None,
            lr: float | None = None) -> Path:
        """One SFT stage (``recipes/sft.py``, as ``make sft-stage*``); returns the last step's HF export."""
        ckpt = self.out / "checkpoints" / name
        final = ckpt / f"global_step_{steps}" / "huggingface"
        if (final / "config.json").is_file():
            return final
        a = self.args
        device = ["+platform=sft_cpu"] if a.device == "cpu" else []
        self.call(name, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                         str(ROOT / "recipes" / "sft.py"), "--config-name", f"sft_stage{stage}", *device,
                         f"data.train_files={self.pairs if stage == 1 else self.trajectories}",
                         f"data.train_batch_size={a.batch}",
                         # CPU: the platform's micro-batch of one item (no padding); GPU: the whole batch at once
                         *([] if a.device == "cpu" else [f"data.micro_batch_size_per_gpu={a.batch}"]),
                         "data.max_length=1024", f"model.path={start}", f"trainer.total_training_steps={steps}",
                         f"trainer.save_freq={save_every or steps}", f"optim.lr={lr or a.lr}",
                         f"optim.lr_warmup_steps={min(5, steps // 2)}",
                         f"trainer.default_local_dir={ckpt}", "trainer.resume_mode=auto",
                         f"hydra.run.dir={self.out / 'hydra' / name}"])
        return final

    def evaluate(self, name: str, models: dict[str, Path], split: str | Path, limit: int | None,
                 methods: list[str] = ("agent",)) -> dict[str, dict]:
        """``recipes/evaluate.py`` (resumable) on one split (a toy split's name, or a QA jsonl); baselines run on the
        first model. Returns the summary by row label."""
        out = self.out / "eval" / name
        dataset = split if isinstance(split, Path) else self.toy / f"{split}.jsonl"
        spec = "{" + ", ".join(f"{k}: {v}" for k, v in models.items()) + "}"
        self.call(f"eval-{name}", [
            sys.executable, str(ROOT / "recipes" / "evaluate.py"), "~models", f"+models={spec}",
            f"methods=[{','.join(methods)}]", f"baseline_model={next(iter(models))}",
            f"datasets.toy={dataset}", f"limit={limit if limit else 'null'}",
            f"retriever_url={self.url}", f"react_exemplars={self.toy / 'train.jsonl'}",
            f"max_tokens={self.args.response_length}", f"baseline_max_tokens={self.args.baseline_tokens}",
            # a row whose dev-chosen checkpoint moved (a re-run with more steps) is evaluated again
            f"out_dir={out}", "superseded=set_aside",
            f"hydra.run.dir={self.out / 'hydra' / name}"])
        return json.loads((out / "summary.json").read_text())["toy"]

    def curriculum(self, model: Path) -> Path:
        path = self.out / "rl" / "curriculum.parquet"
        mode_file, greedy = path.with_name("curriculum_greedy.txt"), self.args.curriculum_greedy
        if path.is_file():
            def before() -> str:  # written before the mode was recorded: greedy rewards mean --greedy-wrong
                with open(path.with_suffix(".pass_rates.jsonl")) as f:
                    return "wrong" if "greedy" in json.loads(f.readline() or "{}") else "off"

            check_written_with(mode_file, "--curriculum-greedy", greedy, before)
        else:
            a = self.args
            self.call("curriculum", [sys.executable, "-m", "autocoa_verl.data.curriculum", "--model", str(model),
                                     "--questions", str(self.toy / "train.jsonl"), "--corpus",
                                     str(self.toy / "corpus.jsonl"), "--index-dir", str(self.out / "bm25-index"),
                                     "--out", str(path), "--samples", str(a.curriculum_samples), "--limit",
                                     str(a.curriculum_questions), "--temperature", str(a.rl_temperature),
                                     "--response-length", str(a.response_length), "--min-rows", str(a.rl_questions),
                                     *([f"--greedy-{greedy}"] if greedy != "off" else [])])
            mode_file.write_text(greedy + "\n")
        return path

    def rl(self, name: str, model: Path, data: Path) -> dict[int, dict[str, float]]:
        """GRPO (``recipes/rl.py``, as ``make rl``); returns the step metrics (``choose_rl_checkpoint`` picks the
        export)."""
        from autocoa_verl.rl_logs import parse_step_metrics

        a = self.args
        ckpt = self.out / "checkpoints" / name
        final = ckpt / f"global_step_{a.rl_steps}" / "actor" / "huggingface"
        log_path = self.out / "logs" / f"{name}.log"
        if (final / "config.json").is_file():
            return parse_step_metrics(log_path.read_text())
        device = ["+platform=rl_cpu"] if a.device == "cpu" else ["trainer.n_gpus_per_node=1"]
        config, overrides = RL_RUNS[name]
        self.call(name, [
            sys.executable, str(ROOT / "recipes" / "rl.py"), "--config-name", config, *device,
            f"actor_rollout_ref.model.path={model}", f"data.train_files={data}",
            f"data.val_files={self.toy / 'dev.parquet'}", f"coa.retriever.url={self.url}",
            f"coa.world_model.fidelity_corpus={self.toy / 'corpus.jsonl'}", *overrides,
            f"data.train_batch_size={a.rl_questions}", f"actor_rollout_ref.rollout.n={a.rl_n}",
            f"actor_rollout_ref.rollout.temperature={a.rl_temperature}",
            f"actor_rollout_ref.actor.ppo_mini_batch_size={a.rl_questions}",
            f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={a.rl_micro_batch}",
            f"data.max_response_length={a.response_length}", f"actor_rollout_ref.actor.optim.lr={a.rl_lr}",
            # epochs: as many passes over the curriculum as the steps need
            f"trainer.total_training_steps={a.rl_steps}", "trainer.total_epochs=1000",
            f"trainer.save_freq={a.rl_save_every or a.rl_steps}", "trainer.test_freq=-1",
            "trainer.resume_mode=auto", f"trainer.default_local_dir={ckpt}",
            f"trainer.rollout_data_dir={self.out / 'rl' / name / 'rollouts'}",
            f"hydra.run.dir={self.out / 'hydra' / name}", *a.rl_arg])
        return parse_step_metrics(log_path.read_text())

    def choose_sft_checkpoint(self, name: str, steps: int, save_every: int) -> tuple[dict[int, float], int, Path]:
        """One SFT run's checkpoints on the dev split: the dev curve, the chosen step (``choose_budget``) and its
        HF export. With one checkpoint nothing is run."""
        ckpt = self.out / "checkpoints" / name
        points = {s: ckpt / f"global_step_{s}" / "huggingface" for s in range(save_every, steps + 1, save_every)}
        points[steps] = ckpt / f"global_step_{steps}" / "huggingface"
        key = name.lower().replace("-", "").replace("+", "_")  # SFT-2+3 -> sft2_3, as in NAMES
        return self.choose_on_dev(f"dev-{key}", points)

    def choose_rl_checkpoint(self, name: str) -> tuple[dict[int, float], int, Path]:
        """Each saved checkpoint of one RL run on the dev split; returns the dev curve, the chosen step (as
        ``choose_budget``) and its HF export. With one checkpoint there is nothing to choose and nothing is run."""
        saved = {int(d.name.rsplit("_", 1)[1]): d / "actor" / "huggingface"
                 for d in (self.out / "checkpoints" / name).glob("global_step_*")
                 if (d / "actor" / "huggingface" / "config.json").is_file()}
        return self.choose_on_dev(f"dev-{name}", saved)

    def choose_on_dev(self, eval_name: str, points: dict[int, Path]) -> tuple[dict[int, float], int, Path]:
        """Checkpoints by step on the dev split: the dev curve, the chosen step (``choose_budget``) and its export.
        With one checkpoint there is nothing to choose and nothing is run."""
        if len(points) == 1:
            (step, path), = points.items()
            return {}, step, path
        dev = self.evaluate(eval_name, {f"step{s}": p for s, p in sorted(points.items())}, "dev",
                            self.args.dev_questions)
        curve = {s: dev[f"agent (step{s})"]["em"] for s in points}
        step = choose_budget(curve)
        return curve, step, points[step]

    def evaluate_trained(self, key: str, start: Path, chosen: Path, step: int) -> dict[str, Any] | None:
        """The start and RL run ``key``'s chosen checkpoint (``step``), greedy, on the training questions the run's
        rollouts asked up to that step: EM of both and the questions gained and lost. None without rollout dumps."""
        rows = trained_questions(self.out / "rl" / key / "rollouts", step, self.toy / "train.jsonl")
        if not rows:
            return None
        path = self.out / "rl" / key / "trained_questions.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self.evaluate(f"trained-{key}", {RL_START: start, key: chosen}, path, None)
        ids = {r["id"] for r in rows}
        before, after = (ems_by_id(records_on(self.out, f"trained-{key}", k, ids)) for k in (RL_START, key))
        return {"questions": len(rows), "to_step": step, "start_em": sum(before.values()) / len(before),
                "em": sum(after.values()) / len(after), **paired_change(before, after)}


def trained_questions(dump_dir: Path, upto: int, train: Path) -> list[dict]:
    """The rows of ``train`` (a QA jsonl) that an RL run's rollouts asked at steps 1..``upto``, in the order first
    asked, from its rollout dump (``rl_logs.rollout_rows``; none: no rows). A dumped prompt whose question ``train``
    lacks is an error naming the dump file and line."""
    from autocoa_verl.data.qa_files import read_qa_jsonl
    from autocoa_verl.rl_logs import dumped_question, rollout_rows

    if not dump_dir.is_dir():
        return []
    by_question = {r["question"]: r for r in read_qa_jsonl(train)}
    asked: dict[str, dict] = {}
    for step, rows in rollout_rows(dump_dir).items():  # in step order
        if step > upto:
            break
        for row in rows:
            question = dumped_question(row["input"])
            if question not in by_question:
                raise ValueError(f"{row['at']}: input: no question of {train} in this prompt")
            asked.setdefault(question, by_question[question])
    return list(asked.values())


def check_written_with(record: Path, option: str, value: str, before: Callable[[], str]) -> None:
    """Refuses to resume outputs written with another ``option`` than ``value``: the value they were written with is
    recorded in ``record`` beside them (``before()``: what outputs from before the record was kept were written
    with)."""
    written = record.read_text().strip() if record.is_file() else before()
    if written != value:
        raise SystemExit(f"{record.parent}: written with {option} {written}, not {value}; use a new --out")


def best_sft(dev_em: dict[str, float | None]) -> str:
    """The best SFT row, chosen on dev: the highest dev EM among the rows with one (SFT-2 and SFT-2+3, each at its
    chosen step), the RL start on a tie or when none was evaluated on dev.

    >>> best_sft({"sft2": 0.76, "sft2_3": 0.70}), best_sft({"sft2": 0.7, "sft2_3": 0.7}), best_sft({"sft2": None})
    ('sft2', 'sft2_3', 'sft2_3')
    """
    known = {key: em for key, em in dev_em.items() if em is not None}
    return max(known, key=lambda key: (known[key], key == RL_START)) if known else RL_START


def trained_ids(out: Path, run: str) -> set[str]:
    """The ids of RL run ``run``'s trained questions, as stage 6 last wrote them
    (``rl/<run>/trained_questions.jsonl``)."""
    return {json.loads(line)["id"] for line in (out / "rl" / run / "trained_questions.jsonl").read_text().splitlines()}


def records_on(out: Path, eval_name: str, key: str, ids: set[str] | None = None) -> list[dict]:
    """One model's agent records (the greedy sample) in the bench's evaluation ``eval_name`` (``test``, ...);
    ``ids``: only these questions (a resumed row may hold records of questions its dataset no longer has)."""
    path = out / "eval" / eval_name / "records" / "toy" / f"agent ({key}).jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines())
            if r["sample"] == 0 and (ids is None or r["id"] in ids)]


def ems_by_id(records: list[dict]) -> dict[str, float]:
    """EM by question id."""
    return {r["id"]: r["em"] for r in records}


def rl_summary(steps: dict[int, dict[str, float]], dump_dir: Path) -> dict[str, Any]:
    """Per-step reward, real/simulated observations, world-model fidelity, zero-variance group share, step time."""
    from autocoa_verl.data.curriculum import zero_variance_share
    from autocoa_verl.rl_logs import rollout_groups

    groups = rollout_groups(dump_dir) if dump_dir.is_dir() else {}
    ordered = sorted(steps)
    reward = [steps[s]["critic/score/mean"] for s in ordered]
    first5, last5 = reward_windows(reward)
    # real calls: the rollouts' and the world-model fidelity checks' (coa/cost/real_calls; older logs lack it)
    calls = [steps[s].get("timing_s/coa/cost/real_calls", steps[s].get("timing_s/coa/obs_real/total", 0))
             for s in ordered]
    return {"steps": ordered, "reward": reward, "reward_first5": first5, "reward_last5": last5,
            "real_calls": int(sum(calls)),
            # of them, the fidelity checks' fetches (calls a schedule that does not measure fidelity would not make)
            "check_calls": int(sum(steps[s].get("timing_s/coa/cost/fidelity_real_calls", 0) for s in ordered)),
            "fidelity_answer_bearing": [steps[s].get("timing_s/coa/fidelity/answer_bearing") for s in ordered],
            "fidelity_checked": [int(steps[s].get("timing_s/coa/fidelity/checked", 0)) for s in ordered],
            "source": ["simulated" if steps[s].get("timing_s/coa/obs_simulated/total", 0) else "real"
                       for s in ordered],
            "calibrating": [bool(steps[s].get("timing_s/coa/schedule/calibrating", 0)) for s in ordered],
            "simulated_observations": int(sum(steps[s].get("timing_s/coa/obs_simulated/total", 0) for s in ordered)),
            "zero_variance_share": [zero_variance_share(groups[s]) if s in groups else None for s in ordered],
            "step_s": [steps[s].get("timing_s/step") for s in ordered]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/bench/learning", help="report and work directory")
    parser.add_argument("--toy", default="build/toy", help="toy world directory (built if missing)")
    parser.add_argument("--model", default="build/models/smollm2-135m", help="base model (materialised if missing)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few steps and questions per stage")
    parser.add_argument("--batch", type=int, default=8, help="SFT sequences (stage 1: pairs) per step")
    parser.add_argument("--lr", type=float, default=1e-4, help="SFT learning rate (SFT-3: --sft3-lr)")
    # defaults: sized for the ~2 h budget on 2 cores from nothing (learning_fresh.md's per-stage times; the SFT-2
    # dev curve was flat from 20 to 60 steps there); measured with them: 5,645 s of stages (learning_2h.md)
    parser.add_argument("--sft2-steps", type=int, default=30, help="SFT-2 steps (the curve's last point)")
    parser.add_argument("--save-every", type=int, default=15, help="SFT-2 checkpoint (curve point) interval")
    parser.add_argument("--sft3-steps", type=int, default=20, help="SFT-3 steps (its curve's last point)")
    parser.add_argument("--sft3-save-every", type=int, default=10, help="SFT-3 checkpoint (curve point) interval")
    parser.add_argument("--sft3-lr", type=float, default=3e-5,
                        help="SFT-3 learning rate (at 1e-4 SFT-3 broke SFT-2's 2-hop plans: sft3_lr.md)")
    parser.add_argument("--read-epochs", type=int, default=0,
                        help="epochs of the read stage over the corpus before SFT (0: start from the base model; "
                             "10: knowledge.md's recipe, ~45 min on 2 cores)")
    parser.add_argument("--oracle-plan", choices=PLANS, default=PLANS[0],
                        help="how the oracle's thoughts track the plan (autocoa_verl.data.oracle --plan); the SFT "
                             "data of an --out is written once, so a change needs a new --out")
    parser.add_argument("--sft1-steps", type=int, default=20)
    parser.add_argument("--sft12-steps", type=int, default=0,
                        help="SFT-2 steps after SFT-1 for the SFT-1+2 rows (0: skip them)")
    parser.add_argument("--dev-questions", type=int, default=100)
    parser.add_argument("--test-questions", type=int, default=None, help="default: the whole test split")
    parser.add_argument("--response-length", type=int, default=768,
                        help="tokens of an agent's whole response (3-hop oracle trajectories reach ~700)")
    parser.add_argument("--baseline-tokens", type=int, default=256, help="tokens per baseline generation (turn)")
    parser.add_argument("--curriculum-questions", type=int, default=128)
    parser.add_argument("--curriculum-samples", type=int, default=4)
    parser.add_argument("--curriculum-greedy", choices=GREEDY_MODES, default="off",
                        help="off: keep 0 < pass < 1; wrong: only among the questions the RL start answers wrong "
                             "greedily (measured: RL on them alone collapsed multi-hop search, learning_state_gw.md); "
                             "balanced: both kinds, alternating (curriculum --greedy-*)")
    parser.add_argument("--curriculum-greedy-wrong", action="store_const", dest="curriculum_greedy", const="wrong",
                        help="the same as --curriculum-greedy wrong (learning_state_gw.md's command)")
    parser.add_argument("--rl-steps", type=int, default=8)
    parser.add_argument("--rl-questions", type=int, default=4, help="questions per GRPO step")
    parser.add_argument("--rl-n", type=int, default=8, help="samples per question (the GRPO group)")
    parser.add_argument("--rl-micro-batch", type=int, default=4,
                        help="sequences per forward/backward (8 x ~900 tokens took ~12 GB in the trainer)")
    parser.add_argument("--rl-lr", type=float, default=2e-5)
    parser.add_argument("--rl-save-every", type=int, default=4,
                        help="RL checkpoint interval (0: the last step only); with several, the dev split "
                             "chooses each run's model")
    parser.add_argument("--rl-temperature", type=float, default=1.0)
    parser.add_argument("--rl-arg", action="append", default=[], help="extra Hydra override for both RL runs")
    parser.add_argument("--rl-schedules", type=_schedules, default=["mixed"],
                        help="comma-separated RL runs after all-real, from the same start: mixed (5:1 "
                             "simulated:real), fidelity (the fidelity-gated schedule); empty: all-real only")
    parser.add_argument("--stop-after", choices=["sft", "rl-real"],
                        help="skip the stages after this one (the test evaluation still runs; re-run to resume)")
    return parser


def _schedules(text: str) -> list[str]:
    """``--rl-schedules``: a comma-separated list of known schedules, in order, without repeats.

    >>> _schedules("fidelity,mixed"), _schedules("")
    (['fidelity', 'mixed'], [])
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if f"rl_{name}" not in RL_RUNS or name == "real"]
    if unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated subset of mixed,fidelity")
    return names


def run_stages(args: argparse.Namespace) -> tuple[dict, dict[str, tuple[dict[int, float], int]], dict, dict]:
    """Every stage, each reused when done: returns the models by key, each chosen SFT stage's dev curve and budget,
    the RL runs' summaries and the test evaluation by row label."""
    from retriever_server.serve import serve_bm25

    bench = Bench(args)
    bench.data()
    with serve_bm25(bench.toy / "corpus.jsonl", bench.out / "bm25-index") as url:
        bench.url = url
        start = bench.read(args.read_epochs) if args.read_epochs else bench.base
        bench.sft("SFT-2", 2, start, args.sft2_steps, args.save_every)
        curve, budget, sft2 = bench.choose_sft_checkpoint("SFT-2", args.sft2_steps, args.save_every)
        models = {"base": start, "sft2": sft2}
        bench.sft("SFT-2+3", 3, sft2, args.sft3_steps, args.sft3_save_every, args.sft3_lr)
        curve3, budget3, models["sft2_3"] = bench.choose_sft_checkpoint("SFT-2+3", args.sft3_steps,
                                                                         args.sft3_save_every)
        if args.sft12_steps:
            sft1 = bench.sft("SFT-1", 1, start, args.sft1_steps)
            models["sft1_2"] = bench.sft("SFT-1+2", 2, sft1, args.sft12_steps)
            models["sft1_2_3"] = bench.sft("SFT-1+2+3", 3, models["sft1_2"], args.sft3_steps, lr=args.sft3_lr)
        rl_runs: dict[str, dict] = {}
        if args.stop_after != "sft":
            data = bench.curriculum(models[RL_START])
            for key in ["rl_real"] + [f"rl_{name}" for name in args.rl_schedules]:
                steps = bench.rl(key, models[RL_START], data)
                dev_curve, chosen, models[key] = bench.choose_rl_checkpoint(key)
                rl_runs[NAMES[key]] = {**rl_summary(steps, bench.out / "rl" / key / "rollouts"),
                                       "dev_curve": {str(k): v for k, v in sorted(dev_curve.items())},
                                       "chosen_step": chosen,
                                       "trained": bench.evaluate_trained(key, models[RL_START], models[key], chosen)}
                if args.stop_after == "rl-real":
                    break
        test = bench.evaluate("test", models, "test", args.test_questions, BASELINES + ["agent"])
    return models, {"SFT-2": (curve, budget), "SFT-2+3": (curve3, budget3)}, rl_runs, test


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.read_epochs < 0:
        parser.error(f"--read-epochs must be >= 0, got {args.read_epochs}")
    if args.quick:
        args.sft2_steps, args.save_every, args.sft3_steps, args.sft3_save_every, args.sft1_steps = 2, 1, 1, 1, 1
        args.dev_questions, args.test_questions, args.curriculum_questions = 8, 8, 8
        args.rl_steps, args.rl_questions, args.rl_n, args.rl_save_every = 1, 2, 4, 0
        args.sft12_steps = min(args.sft12_steps, 1)
    import pyarrow.parquet as pq

    models, sft_curves, rl_runs, test = run_stages(args)
    (curve, budget), (curve3, budget3) = sft_curves["SFT-2"], sft_curves["SFT-2+3"]
    out = Path(args.out).resolve()

    rows = [report_row(m, test[m]) for m in BASELINES]
    # with the read stage, the "base" row (and the baselines) are the model that has read the corpus
    names = {**NAMES, "base": "read corpus (agent)"} if args.read_epochs else NAMES
    records = {key: records_on(out, "test", key) for key in models}
    rows += [report_row(names[key], test[f"agent ({key})"], rl_runs.get(NAMES[key], {}).get("real_calls"),
                        early_stops(records[key])) for key in models]
    em = {r["name"]: r["em"] for r in rows}
    timings = json.loads((out / "timings.json").read_text())
    dev_em = {"sft2": curve.get(budget), "sft2_3": curve3.get(budget3)}
    best = best_sft(dev_em)
    paired = [{"from": names[a], "to": names[b], **paired_change(ems_by_id(records[a]), ems_by_id(records[b]))}
              for a, b in PAIRED if a in models and b in models]
    report = {
        "rows": rows, "best_sft_name": names[best], "best_sft_em": em[names[best]],
        "best_sft_dev_em": dev_em.get(best), "paired": paired, "rl_start": NAMES[RL_START],
        "rl_start_em": em[NAMES[RL_START]], "rl_all_real_em": em.get("RL all-real"), "rl_mixed_em": em.get("RL 5:1"),
        "rl_reward_first5": rl_runs.get("RL all-real", {}).get("reward_first5"),
        "rl_reward_last5": rl_runs.get("RL all-real", {}).get("reward_last5"),
        "all_real_calls": rl_runs.get("RL all-real", {}).get("real_calls"),
        "mixed_real_calls": rl_runs.get("RL 5:1", {}).get("real_calls"),
        "rl_fidelity_em": em.get("RL fidelity-gated"),
        "fidelity_real_calls": rl_runs.get("RL fidelity-gated", {}).get("real_calls"),
        "react_fewshot_em": em["react_fewshot"], "sft_curve": {str(k): v for k, v in curve.items()},
        "sft2_budget": budget, "sft3_curve": {str(k): v for k, v in curve3.items()}, "sft3_budget": budget3,
        "rl": rl_runs, "test_questions": test["direct"]["questions"],
        "rl_questions_kept": pq.read_metadata(out / "rl" / "curriculum.parquet").num_rows if rl_runs else 0,
        "settings": dict(vars(args)),
        "wall_s": sum(timings.values()), "stage_wall_s": timings,
        **provenance("learning_bench.py", argv),
    }
    check_report(report)
    report["targets"] = targets(report)
    plot(report, out / "curves.png")
    write_report(out, "report", report, markdown(report))


if __name__ == "__main__":
    main()

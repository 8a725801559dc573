"""The learning benchmark's report: the rows, the issue's targets (met or not), markdown and curves. The stages that
produce it are in ``learning_bench.py``."""

from __future__ import annotations

from pathlib import Path

REPORT_KEYS = ("rows", "best_sft_em", "rl_all_real_em", "rl_mixed_em", "rl_start_em", "rl_reward_first5",
               "rl_reward_last5", "mixed_real_calls", "all_real_calls", "react_fewshot_em", "wall_s", "commit")
# bench-learning's --curriculum-greedy, as the report's RL line says it
CURRICULUM_NOTE = {"off": "", "wrong": " (among those the start answers wrong greedily)",
                   "balanced": " (alternating those the start answers wrong and right greedily)"}
BUDGET_S = 7200  # the "about 2 hours on 2 cores" for the whole benchmark


def reward_windows(rewards: list[float], window: int = 5) -> tuple[float, float]:
    """Mean training reward over the first and the last ``window`` steps (fewer steps: all of them).

    >>> reward_windows([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    (0.3, 0.5)
    """
    if not rewards:
        raise ValueError("reward_windows: no steps")
    first, last = rewards[:window], rewards[-window:]
    return sum(first) / len(first), sum(last) / len(last)


def sign_test(gained: int, lost: int) -> float:
    """Exact two-sided sign test: the chance of a split at least this uneven between questions one model gained and
    questions it lost against another, if either were equally likely (questions both got right or wrong say nothing).

    >>> round(sign_test(15, 14), 3), round(sign_test(5, 16), 3), sign_test(0, 0)
    (1.0, 0.027, 1.0)
    """
    from math import comb

    n, k = gained + lost, min(gained, lost)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0


def paired_change(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Question by question (EM by question id, the same questions on both sides): how many ``after`` gained and lost
    against ``before``, and the sign test's p.

    >>> paired_change({"a": 1.0, "b": 0.0, "c": 0.0}, {"a": 0.0, "b": 1.0, "c": 1.0})
    {'gained': 2, 'lost': 1, 'p': 1.0}
    """
    if before.keys() != after.keys():
        raise ValueError(f"paired_change: different questions ({len(before)} vs {len(after)})")
    gained = sum(1 for q in before if after[q] > before[q])
    lost = sum(1 for q in before if after[q] < before[q])
    return {"gained": gained, "lost": lost, "p": sign_test(gained, lost)}


def early_stops(records: list[dict]) -> float | None:
    """The share of search questions answered after fewer searches than their hops (the agent stopped early).

    >>> early_stops([{"hops": 3, "searches": 2}, {"hops": 2, "searches": 2}, {"hops": 0, "searches": 0}])
    0.5
    """
    searched = [r for r in records if r.get("hops")]
    return sum(r["searches"] < r["hops"] for r in searched) / len(searched) if searched else None


def report_row(name: str, summary: dict, real_calls: int | None = None, stopped_early: float | None = None) -> dict:
    """One row of the report from an evaluation summary (``autocoa_verl.eval.harness.summarize``)."""
    return {"name": name, "em": summary["em"], "f1": summary["f1"],
            "em_by_hops": {k: v["em"] for k, v in summary.get("em_by_hops", {}).items()},
            "when_to_act": summary.get("when_to_act"), "searches_per_q": summary["searches"],
            "stopped_early": stopped_early, "real_calls": real_calls}


def check_report(report: dict) -> None:
    """Raises ``KeyError`` naming the keys that tools reading the report rely on and that it lacks."""
    missing = [key for key in REPORT_KEYS if key not in report]
    if missing:
        raise KeyError(f"learning report lacks {missing}")


def markdown(report: dict) -> str:
    a = report["settings"]
    lines = ["# Learning on the toy world (SmolLM2-135M, CPU)", "",
             f"Commit `{report['commit']}`; command: `{report['command']}`; wall time {report['wall_s']:.0f} s "
             "(sum of the stages' subprocesses, over resumed runs; per stage in report.json).",
             f"Held-out test split: {report['test_questions']} questions, greedy, bm25 top-3, the training scorer.",
             f"SFT: batch {a['batch']}, lr {a['lr']} (SFT-3: {a['sft3_lr']}); budgets chosen on the dev "
             f"split ({a['dev_questions']} questions): SFT-2 {report['sft2_budget']} steps, SFT-3 "
             f"{report['sft3_budget']} steps. RL: {a['rl_steps']} GRPO steps of {a['rl_questions']} "
             f"questions x {a['rl_n']} samples, lr {a['rl_lr']}, temperature {a['rl_temperature']}, on "
             f"{report['rl_questions_kept']} curriculum questions"
             f"{CURRICULUM_NOTE[a.get('curriculum_greedy', 'off')]}.",
             *([f"Best SFT row: {report['best_sft_name']}, the SFT row with the highest dev EM at its chosen step "
                f"({report['best_sft_dev_em']:.3f}); RL starts from {report['rl_start']}."]
               if report.get("best_sft_dev_em") is not None else []), "",
             *([f"Start of every row, baselines included: the base model after the read stage ({a['read_epochs']} "
                "epochs of next-token loss on the corpus).", ""] if a.get("read_epochs") else []),
             "Stopped early: the share of search questions the agent answered after fewer searches than their hops.",
             "",
             "| model / method | EM | F1 | EM 0-hop | 1-hop | 2-hop | 3-hop | when-to-act | searches / q "
             "| stopped early | real calls in RL |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for r in report["rows"]:
        hops = [fmt(r["em_by_hops"].get(str(h))) for h in range(4)]
        calls = "—" if r["real_calls"] is None else str(r["real_calls"])
        lines.append(f"| {r['name']} | {r['em']:.3f} | {r['f1']:.3f} | " + " | ".join(hops) +
                     f" | {fmt(r['when_to_act'])} | {r['searches_per_q']:.2f} | {fmt(r.get('stopped_early'))}"
                     f" | {calls} |")
    for stage, key in (("SFT-2", "sft_curve"), ("SFT-3", "sft3_curve")):
        if report.get(key):
            lines += ["", f"{stage} curve (dev EM by steps): " + ", ".join(
                f"{k}: {v:.3f}" for k, v in sorted(report[key].items(), key=lambda kv: int(kv[0])))]
    for name, rl in report["rl"].items():
        lines += ["", f"{name}: reward per step " + ", ".join(f"{x:.3f}" for x in rl["reward"]) +
                  f"; first-5 mean {rl['reward_first5']:.3f}, last-5 mean {rl['reward_last5']:.3f}; zero-variance "
                  "group share per step " + ", ".join("—" if z is None else f"{z:.2f}"
                                                      for z in rl["zero_variance_share"]) +
                  f"; real retriever calls {rl['real_calls']}"
                  + (f" ({rl['check_calls']} of them fidelity checks)" if rl["check_calls"] else "")
                  + f", simulated observations {rl['simulated_observations']}"]
        if any(f is not None for f in rl.get("fidelity_answer_bearing", [])):
            sources = zip(rl["source"], rl["calibrating"])
            lines[-1] += ("; per step source (s: simulated, c: simulated calibration step, R: real) " + "".join(
                ("c" if cal else "s") if src == "simulated" else "R" for src, cal in sources)
                + ", world-model answer-bearing "
                + ", ".join("—" if f is None else f"{f:.2f} of {n}"
                            for f, n in zip(rl["fidelity_answer_bearing"], rl["fidelity_checked"])))
        if rl.get("dev_curve"):
            lines[-1] += ("; dev EM by checkpoint " + ", ".join(f"{k}: {v:.3f}" for k, v in rl["dev_curve"].items())
                          + f"; the test row is step {rl['chosen_step']}")
        if rl.get("trained"):
            t = rl["trained"]
            lines[-1] += (f"; on the {t['questions']} training questions its rollouts asked up to step {t['to_step']} "
                          f"(greedy), EM {t['start_em']:.3f} at its start -> {t['em']:.3f} (+{t['gained']} / "
                          f"-{t['lost']})")
    if report.get("paired"):
        lines += ["", "Paired on the test questions (gained / lost questions, exact two-sided sign test):", ""] + [
            f"- {c['from']} -> {c['to']}: +{c['gained']} / -{c['lost']}, p = {c['p']:.3f}" for c in report["paired"]]
    lines += ["", "## Targets", ""] + [f"- {t}" for t in report["targets"]]
    return "\n".join(lines) + "\n"


def targets(report: dict) -> list[str]:
    """The issue's targets, each with the measured value and met / not met."""
    rows = {r["name"]: r for r in report["rows"]}
    best = rows[report["best_sft_name"]]
    hops = best["em_by_hops"]
    check = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    wanted = [("EM", best["em"], 0.60), ("1-hop EM", hops.get("1", 0.0), 0.90), ("2-hop EM", hops.get("2", 0.0), 0.60),
              ("3-hop EM", hops.get("3", 0.0), 0.30), ("when-to-act", best["when_to_act"], 0.95)]
    out = [f"best SFT ({report['best_sft_name']}) " + "; ".join(
        f"{name} >= {goal:.2f}: {value:.3f} ({check(value >= goal)})" for name, value, goal in wanted)]
    if report.get("rl_all_real_em") is not None:
        gain = report["rl_all_real_em"] - report["rl_start_em"]
        out.append(f"RL all-real >= +0.05 EM over its start: {gain:+.3f} ({check(gain >= 0.05)})")
        rl = report["rl"]["RL all-real"]
        out.append(f"RL reward last-5 >= first-5 + 0.10: {rl['reward_last5']:.3f} vs {rl['reward_first5']:.3f} "
                   f"({check(rl['reward_last5'] >= rl['reward_first5'] + 0.10)})")
    if report.get("rl_mixed_em") is not None and report.get("rl_all_real_em") is not None:
        gap = report["rl_all_real_em"] - report["rl_mixed_em"]
        saved = 1 - report["mixed_real_calls"] / max(1, report["all_real_calls"])
        out.append(f"5:1 within 0.03 EM of all-real: gap {gap:+.3f}; >= 80% fewer real calls: {saved:.1%} "
                   f"({check(gap <= 0.03 and saved >= 0.8)})")
    if report.get("rl_fidelity_em") is not None and report.get("rl_all_real_em") is not None:
        gap = report["rl_all_real_em"] - report["rl_fidelity_em"]
        calls, mixed = report["fidelity_real_calls"], report.get("mixed_real_calls")
        fewer = "5:1 not run, not measured" if mixed is None else f"{calls} vs {mixed}"
        out.append(f"fidelity-gated within 0.02 EM of all-real: gap {gap:+.3f}; fewer real calls than 5:1: {fewer} "
                   f"({check(gap <= 0.02 and mixed is not None and calls < mixed)})")
    agent = max(r["em"] for r in report["rows"] if r["name"].startswith(("SFT", "RL")))
    margin = agent - report["react_fewshot_em"]
    out.append(f"agent beats few-shot ReAct by >= 0.20 EM: {margin:+.3f} ({check(margin >= 0.20)})")
    out.append(f"whole benchmark in about 2 h (stage wall time <= {BUDGET_S} s): {report['wall_s']:.0f} s "
               f"({check(report['wall_s'] <= BUDGET_S)})")
    return out


def plot(report: dict, path: Path) -> None:
    """RL training reward per step for each schedule, dev EM against SFT-2 steps, test EM per stage, and the world
    model's measured fidelity per step where the runs logged it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fidelity = {name: [(s, f) for s, f in zip(rl["steps"], rl.get("fidelity_answer_bearing", [])) if f is not None]
                for name, rl in report["rl"].items()}
    fidelity = {name: points for name, points in fidelity.items() if points}
    fig, axes = plt.subplots(1, 4 if fidelity else 3, figsize=(20 if fidelity else 15, 4))
    for name, rl in report["rl"].items():
        axes[0].plot(rl["steps"], rl["reward"], marker="o", label=name)
    axes[0].set_xlabel("GRPO step"), axes[0].set_ylabel("mean training reward (EM)"), axes[0].legend()
    axes[0].set_title("RL training reward")
    for name, points in fidelity.items():
        axes[3].plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    if fidelity:
        axes[3].set_xlabel("GRPO step"), axes[3].set_ylabel("answer-bearing share"), axes[3].set_ylim(0, 1)
        axes[3].set_title("world-model fidelity (sampled checks)"), axes[3].legend()
    for stage, key in (("SFT-2", "sft_curve"), ("SFT-3", "sft3_curve")):
        curve = sorted((int(k), v) for k, v in report.get(key, {}).items())
        axes[1].plot([c[0] for c in curve], [c[1] for c in curve], marker="o", label=stage)
    axes[1].set_xlabel("steps in the stage"), axes[1].set_ylabel("dev EM (agent)"), axes[1].set_ylim(0, 1)
    axes[1].set_title("SFT curves (dev split)"), axes[1].legend()
    names = [r["name"] for r in report["rows"]]
    axes[2].barh(names, [r["em"] for r in report["rows"]])
    axes[2].set_xlim(0, 1), axes[2].set_xlabel("test EM"), axes[2].set_title("held-out test EM per stage")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

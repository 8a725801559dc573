"""What an RL run leaves behind, read back: verl's console step metrics and its rollout dump
(``trainer.rollout_data_dir``), for the demo, the benchmarks and the tests.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path


def parse_step_metrics(log: str) -> dict[int, dict[str, float]]:
    """Per-step metrics from verl's console logger (one ``step:N - key:value - ...`` line per step; a step printed
    twice keeps its last line).

    >>> parse_step_metrics("step:3 - critic/score/mean:0.5 - timing_s/gen:np.float64(2.5) - x:np.int64(4)")
    {3: {'critic/score/mean': 0.5, 'timing_s/gen': 2.5, 'x': 4.0}}
    """
    steps = {}
    for step, line in re.findall(r"step:(\d+) - (.*)", log):
        pairs = re.findall(r"([\w/@.-]+?):(?:np\.\w+\()?(-?[0-9][0-9.e+-]*|nan)", line)
        steps[int(step)] = {key.strip(" -"): float(value) for key, value in pairs}
    return steps


def rollout_rows(dump_dir: str | Path) -> dict[int, list[dict]]:
    """Per training step (each line's ``step``), the lines of verl's rollout dump (``trainer.rollout_data_dir``: one
    ``<step>.jsonl`` per step, a line per sample with ``input``, ``score`` and ``step``), each with ``at``
    (``<file>:<line>``, for errors); blank lines are skipped.

    Raises:
        FileNotFoundError: ``dump_dir`` holds no step files.
        ValueError: a line that is not a dump line, naming its file and line.
    """
    files = sorted(Path(dump_dir).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{dump_dir}: no rollout dump (<step>.jsonl); set trainer.rollout_data_dir")
    steps: dict[int, list[dict]] = defaultdict(list)
    for path in files:
        with open(path, encoding="utf-8") as lines:
            text = list(lines)
        for line_no, line in enumerate(text, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    row.update(step=int(row["step"]), score=float(row["score"]), at=f"{path}:{line_no}")
                    if not isinstance(row["input"], str):
                        raise TypeError("input is not a string")
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                    raise ValueError(f"{path}:{line_no}: not a rollout-dump line ({error})") from None
                steps[row["step"]].append(row)
    return dict(sorted(steps.items()))


def rollout_groups(dump_dir: str | Path) -> dict[int, list[list[float]]]:
    """Per training step, the GRPO groups' rewards from the rollout dump (:func:`rollout_rows`); a group is the
    samples of one prompt."""
    out = {}
    for step, rows in rollout_rows(dump_dir).items():
        groups: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            groups[row["input"]].append(row["score"])
        out[step] = list(groups.values())
    return out


def dumped_question(prompt: str) -> str | None:
    """The question a dumped rollout prompt asked (the protocol's prompt ends its user turn with ``Question: ...``);
    None if it names none.

    >>> dumped_question("user\\nAnswer it.\\nQuestion: Who founded Quessly?\\nassistant\\n")
    'Who founded Quessly?'
    """
    if "Question: " not in prompt:
        return None
    return prompt.rsplit("Question: ", 1)[1].split("\n", 1)[0].strip()


def step_summary(step: int, m: dict[str, float]) -> str:
    """One line per RL step: reward, searches, observations by source, the world model's measured fidelity where
    the step checked it, time.

    >>> step_summary(2, {"critic/score/mean": 0.25, "timing_s/coa/obs_real/total": 6}).split("; ")[0]
    'RL step 2: reward 0.250, searches/sample 0.00, observations real 6 / simulated 0'
    >>> step_summary(1, {"critic/score/mean": 0.5, "timing_s/coa/fidelity/checked": 2,
    ...                  "timing_s/coa/fidelity/answer_bearing": 0.0}).split("; ")[1]
    'world model answer-bearing 0.00 (2 checked)'
    """
    checked = m.get("timing_s/coa/fidelity/checked")
    fidelity = (f"world model answer-bearing {m.get('timing_s/coa/fidelity/answer_bearing', 0.0):.2f} "
                f"({checked:.0f} checked); " if checked else "")
    return (f"RL step {step}: reward {m['critic/score/mean']:.3f}, searches/sample "
            f"{m.get('timing_s/coa/searches/mean', 0.0):.2f}, observations real "
            f"{m.get('timing_s/coa/obs_real/total', 0.0):.0f} / simulated "
            f"{m.get('timing_s/coa/obs_simulated/total', 0.0):.0f}; {fidelity}"
            f"time gen {m.get('timing_s/gen', 0.0):.1f} s, update {m.get('timing_s/update_actor', 0.0):.1f} s, "
            f"step {m.get('timing_s/step', 0.0):.1f} s")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Print an RL run's reward, searches and time per step from its "
                                                 "console log (recipes/rl.py's output).")
    parser.add_argument("log", help="the run's log file")
    args = parser.parse_args(argv)
    steps = parse_step_metrics(Path(args.log).read_text(errors="replace"))
    if not steps:
        raise SystemExit(f"error: {args.log}: no 'step:N - ...' metric lines (did the run reach a step?)")
    for step, metrics in sorted(steps.items()):
        print(step_summary(step, metrics))


if __name__ == "__main__":
    main()

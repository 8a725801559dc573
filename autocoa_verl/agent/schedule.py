"""Which observation provider a rollout uses at a training step: the real retriever or the policy as world model."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Literal

Source = Literal["real", "simulated"]
KINDS = ("always_real", "always_simulated", "ratio", "staged", "fidelity")
FIDELITY_METRICS = ("answer_bearing", "token_f1", "rouge_l")


@dataclass(frozen=True)
class ObservationSchedule:
    """Picks ``real`` or ``simulated`` observations by training step (verl counts steps from 1).

    Args:
        kind: ``always_real``, ``always_simulated``, ``ratio`` (``simulated_per_real`` simulated steps, then one real
            step, repeating) or ``staged`` (the first ``simulated_steps`` steps simulated, real after; the paper's
            80 + 16).
        simulated_per_real: for ``ratio``.
        simulated_steps: for ``staged``.
        validation: the source for validation rollouts, whatever the step.
        fidelity_metric, fidelity_threshold, fidelity_window, fidelity_min_checks, max_simulated_share,
            calibration_sample: for ``fidelity``, which :func:`fidelity_decision` decides step by step from the world
            model's measured fidelity.

    The choice is a pure function of the step (``fidelity``: of the steps' recorded fidelity), so a run resumed
    from a checkpoint at step ``s`` continues the pattern exactly where it stopped.

    >>> s = ObservationSchedule("ratio", simulated_per_real=5)
    >>> "".join("R" if s.source(step) == "real" else "s" for step in range(1, 13))
    'sssssRsssssR'
    >>> ObservationSchedule("staged", simulated_steps=2).source(3)
    'real'
    """

    kind: str = "always_real"
    simulated_per_real: int = 5
    simulated_steps: int = 80
    validation: Source = "real"
    fidelity_metric: str = "answer_bearing"
    fidelity_threshold: float = 0.5
    fidelity_window: int = 2
    fidelity_min_checks: int = 8
    max_simulated_share: float = 0.84
    calibration_sample: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"coa.schedule.kind={self.kind!r}: choose one of {KINDS}")
        if self.simulated_per_real < 0 or self.simulated_steps < 0:
            raise ValueError("coa.schedule: simulated_per_real and simulated_steps must be >= 0")
        if self.fidelity_metric not in FIDELITY_METRICS:
            raise ValueError(f"coa.schedule.fidelity_metric={self.fidelity_metric!r}: choose one of "
                             f"{FIDELITY_METRICS}")
        if (self.fidelity_window < 1 or self.fidelity_min_checks < 1 or not 0 <= self.max_simulated_share <= 1
                or not 0 <= self.calibration_sample <= 1):
            raise ValueError("coa.schedule: fidelity_window and fidelity_min_checks must be >= 1, "
                             "max_simulated_share and calibration_sample in [0, 1]")
        if self.validation not in ("real", "simulated"):
            raise ValueError(f"coa.schedule.validation={self.validation!r}: choose 'real' or 'simulated'")

    @classmethod
    def from_config(cls, schedule) -> "ObservationSchedule":
        """From ``coa.schedule`` (any mapping of this class's fields): the one way the loop and the RL preflight
        build it."""
        return cls(**schedule)

    def source(self, step: int | None, validate: bool = False, decided: Source | None = None) -> Source:
        """The source for a rollout at ``step``; ``step`` may be None only for the ``always_*`` kinds.
        ``decided``: the manager's :func:`fidelity_decision` choice for the step (the ``fidelity`` kind needs it)."""
        if validate:
            return self.validation
        if self.kind == "fidelity":
            if decided not in ("real", "simulated"):
                raise ValueError(
                    "coa.schedule.kind='fidelity' is decided per step by the agent-loop manager (actor_rollout_ref."
                    "rollout.agent.agent_loop_manager_class=autocoa_verl.agent.manager.CoAAgentLoopManager); "
                    f"standalone, pass coa_source per row (got {decided!r})")
            return decided
        if self.kind == "always_real":
            return "real"
        if self.kind == "always_simulated":
            return "simulated"
        if step is None or step < 0:
            raise ValueError(
                f"coa.schedule.kind={self.kind!r} needs the training step, and this rollout got none. With verl's "
                "legacy trainer (trainer.use_v1=false) set actor_rollout_ref.rollout.agent.agent_loop_manager_class="
                "autocoa_verl.agent.manager.CoAAgentLoopManager; standalone, pass global_steps per row.")
        step = max(int(step), 1)
        if self.kind == "staged":
            return "simulated" if step <= self.simulated_steps else "real"
        return "real" if (step - 1) % (self.simulated_per_real + 1) == self.simulated_per_real else "simulated"

    def count(self, first_step: int, last_step: int) -> dict[str, int]:
        """How many steps in ``first_step..last_step`` use each source (what the schedule saves in retriever calls);
        not for the ``fidelity`` kind, which is decided as the run goes.

        >>> ObservationSchedule("ratio").count(1, 96)
        {'real': 16, 'simulated': 80}
        """
        sources = [self.source(step) for step in range(first_step, last_step + 1)]
        return {"real": sources.count("real"), "simulated": sources.count("simulated")}


def fidelity_decision(schedule: ObservationSchedule, history: list[dict], step: int) -> tuple[Source, bool]:
    """The ``fidelity`` schedule's choice for training step ``step``, ``(source, calibrating)``, from the records of
    the steps before it (``{"step", "source", "fidelity", "fidelity_checked"}``; fidelity None where nothing was
    measured, checked the number of observations it was measured on, 1 where a record lacks it).

    - Real when simulating would make the simulated share of steps exceed ``max_simulated_share``.
    - Without enough evidence (fewer than ``fidelity_min_checks`` checks in the last ``fidelity_window`` measured
      steps; one answer-bearing probe of two is not evidence of a world model): real, or, with
      ``calibration_sample`` > 0, a *calibration* step: simulated, with that share of its simulated observations
      checked against the real ones. A few real calls then buy the evidence that a whole real step would, and a
      window of simulated steps whose ``fidelity_sample`` yields too few checks is topped up instead of going real.
    - Otherwise simulated while the window's pooled fidelity (each step's mean weighted by its checks) is at least
      ``fidelity_threshold``, real when it drops.

    Fidelity is measured on simulated steps (their sampled real observations) and on real ones (the world model's
    sampled probes), so a world model that recovers is used again. A pure function of the history, which
    :class:`StepLedger` saves beside the checkpoints: a resumed run decides exactly as before.

    >>> schedule = ObservationSchedule("fidelity", fidelity_window=1, fidelity_min_checks=4, max_simulated_share=0.6)
    >>> history = []
    >>> for step, measured in enumerate([0.9, 0.8, 0.9, 0.2, 0.7, 0.9, 0.9], start=1):
    ...     source, _ = fidelity_decision(schedule, history, step)
    ...     history.append({"step": step, "source": source, "fidelity": measured, "fidelity_checked": 4})
    >>> "".join("R" if h["source"] == "real" else "s" for h in history)  # step 3: the share cap; step 5: the drop
    'RsRsRss'
    >>> fidelity_decision(schedule, [{"step": 1, "source": "real", "fidelity": 0.5, "fidelity_checked": 2}], 2)
    ('real', False)
    >>> calibrated = ObservationSchedule("fidelity", fidelity_min_checks=8, max_simulated_share=1.0,
    ...                                  calibration_sample=0.3)
    >>> fidelity_decision(calibrated, [], 1)  # no evidence yet: simulate, and check 30% against the real tool
    ('simulated', True)
    >>> fidelity_decision(calibrated, [{"step": 1, "source": "simulated", "fidelity": 0.7, "fidelity_checked": 9}], 2)
    ('simulated', False)
    """
    past = [h for h in history if h["step"] < step]
    simulated = sum(h["source"] == "simulated" for h in past)
    if (simulated + 1) / (len(past) + 1) > schedule.max_simulated_share:
        return "real", False
    measured = [h for h in past if h.get("fidelity") is not None][-schedule.fidelity_window:]
    weights = [h.get("fidelity_checked") or 1 for h in measured]
    checks = sum(weights)
    if checks < schedule.fidelity_min_checks:
        return ("simulated", True) if schedule.calibration_sample > 0 else ("real", False)
    pooled = sum(h["fidelity"] * weight for h, weight in zip(measured, weights)) / checks
    return ("simulated" if pooled >= schedule.fidelity_threshold else "real"), False


@dataclass
class StepLedger:
    """One record per training step (its source, measured fidelity and environment costs), saved as JSON beside the
    checkpoints after every step. What the ``fidelity`` schedule decides from, and what the run's cost totals add up.

    A run resumed at step ``s`` (or started again from step 1 in the same directory) drops the records from ``s`` on:
    those steps are run again.
    """

    path: str | None = None
    history: list[dict] = field(default_factory=list)

    def record(self, step: int, **values) -> dict:
        self.history = [h for h in self.history if h["step"] < step]
        entry = {"step": int(step), **values}
        self.history.append(entry)
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(f"{self.path}.tmp", "w") as f:
                json.dump({"history": self.history}, f)
            os.replace(f"{self.path}.tmp", self.path)
        return entry

    def totals(self, *keys: str) -> dict[str, float]:
        return {key: float(sum(h.get(key) or 0 for h in self.history)) for key in keys}

    @classmethod
    def resume(cls, path: str | None, step: int) -> "StepLedger":
        """The ledger at ``path`` with the records before ``step`` (a missing file: a fresh run)."""
        if not path or not os.path.exists(path):
            return cls(path)
        try:
            with open(path) as f:
                history = [dict(h, step=int(h["step"])) for h in json.load(f)["history"]]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a CoA step ledger ({error})") from None
        return cls(path, [h for h in history if h["step"] < step])

"""Which observation provider a rollout uses at a training step: the real retriever or the policy as world model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["real", "simulated"]
KINDS = ("always_real", "always_simulated", "ratio", "staged")


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

    The choice is a pure function of the step, so a run resumed from a checkpoint at step ``s`` continues the
    pattern exactly where it stopped.

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

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"coa.schedule.kind={self.kind!r}: choose one of {KINDS}")
        if self.simulated_per_real < 0 or self.simulated_steps < 0:
            raise ValueError("coa.schedule: simulated_per_real and simulated_steps must be >= 0")
        if self.validation not in ("real", "simulated"):
            raise ValueError(f"coa.schedule.validation={self.validation!r}: choose 'real' or 'simulated'")

    @classmethod
    def from_config(cls, schedule) -> "ObservationSchedule":
        """From ``coa.schedule`` (any mapping of this class's fields): the one way the loop and the RL preflight
        build it."""
        return cls(**schedule)

    def source(self, step: int | None, validate: bool = False) -> Source:
        """The source for a rollout at ``step``; ``step`` may be None only for the ``always_*`` kinds."""
        if validate:
            return self.validation
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
        """How many steps in ``first_step..last_step`` use each source (what the schedule saves in retriever calls).

        >>> ObservationSchedule("ratio").count(1, 96)
        {'real': 16, 'simulated': 80}
        """
        sources = [self.source(step) for step in range(first_step, last_step + 1)]
        return {"real": sources.count("real"), "simulated": sources.count("simulated")}

"""verl's reward-function entry: ``compute_score(data_source, solution_str, ground_truth, extra_info, **kw)``.

Configure it in a PPO config (see ``hydra_configs/reward/coa.yaml``)::

    reward.custom_reward_function.path=pkg://autocoa_verl.reward.compute_score
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.metric=f1
"""

from __future__ import annotations

from typing import Any

from autocoa_verl.protocol import DEFAULT_PRESET
from autocoa_verl.reward.scoring import qa_scores

METRICS = ("em", "subem", "f1")


def compute_score(
    data_source: str | None,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    *,
    metric: str = "em",
    format_penalty: float = 0.0,
    preset: str = DEFAULT_PRESET,
    **unused: Any,
) -> dict[str, float]:
    """Scores one response.

    Args:
        data_source: the row's data source (kept for verl's signature; scoring does not depend on it).
        solution_str: the decoded response, observation blocks included (they are ignored when reading the answer).
        ground_truth: a gold string, a list of them, or ``{"target": [...]}``.
        extra_info: the row's extra info (unused).
        metric: which score is the reward: ``em``, ``subem`` or ``f1``.
        format_penalty: subtracted from the reward when the response breaks the tag protocol (0 disables).
        preset: the tag protocol preset.

    Returns:
        ``score`` (the reward) and every metric, all floats, so verl logs them per step.

    >>> compute_score("toy", "<answer>Mira Oltan</answer>", {"target": ["Mira Oltan"]})["score"]
    1.0
    >>> compute_score("toy", "Mira Oltan", ["Mira Oltan"], format_penalty=0.2)["score"]
    -0.2
    """
    if metric not in METRICS:
        raise ValueError(f"compute_score: metric must be one of {METRICS}, got {metric!r}")
    scores = qa_scores(solution_str, ground_truth, preset)
    reward = scores[metric] - (format_penalty if not scores["format_ok"] else 0.0)
    return {
        "score": float(reward),
        "em": scores["em"],
        "subem": scores["subem"],
        "f1": scores["f1"],
        "format_ok": scores["format_ok"],
        "answered": float(scores["answer"] is not None),
    }

"""verl's reward-function entry: ``compute_score(data_source, solution_str, ground_truth, extra_info, **kw)``.

Configure it in a PPO config (see ``hydra_configs/reward/coa.yaml``)::

    reward.custom_reward_function.path=pkg://autocoa_verl.reward.compute_score
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.metric=f1
"""

from __future__ import annotations

from typing import Any

from autocoa_verl.protocol import DEFAULT_PRESET, count_searches
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
    search_cost: float = 0.0,
    search_cost_cap: float = 0.5,
    **unused: Any,
) -> dict[str, float]:
    """Scores one response.

    Args:
        data_source: the row's data source (kept for verl's signature; scoring does not depend on it).
        solution_str: the decoded response, observation blocks included (they are ignored when reading the answer).
        ground_truth: a gold string, a list of them, or ``{"target": [...]}``.
        extra_info: the row's extra info; its ``hops`` (searches the question needs), where present, sets what
            counts as an extra search.
        metric: which score is the reward: ``em``, ``subem`` or ``f1``.
        format_penalty: subtracted from the reward when the response breaks the tag protocol (0 disables).
        preset: the tag protocol preset.
        search_cost: the search-cost-aware reward (0, the default, disables it): a *correct* answer loses
            ``search_cost`` per extra search (beyond ``hops``, or every search where the row has no hop count), at
            most ``search_cost_cap``. Wrong answers are never charged, and a charged correct answer keeps at least
            ``1 - search_cost_cap > 0``, above every wrong answer's 0: correctness always dominates, so the cost can
            only rank correct answers among themselves (fewer searches first). A fixed charge on every search is
            what is reported to be hacked (arXiv 2605.29796: the policy stops searching and guesses). Needs
            ``metric=em``: a partial-credit wrong answer could outrank a charged correct one.
        search_cost_cap: the most a correct answer is charged, in [0, 1).

    Returns:
        ``score`` (the reward) and every metric, all floats, so verl logs them per step: ``searches`` and
        ``over_search`` (1 when the response searched more than the row's ``hops``; 0 where the row has none).

    >>> compute_score("toy", "<answer>Mira Oltan</answer>", {"target": ["Mira Oltan"]})["score"]
    1.0
    >>> compute_score("toy", "Mira Oltan", ["Mira Oltan"], format_penalty=0.2)["score"]
    -0.2

    With a search cost, of three answers to a 1-hop question, the correct one with 3 searches still outranks the
    wrong one with 1, and the correct one with 1 search outranks both:

    >>> s, r = "<search>q</search>" * 3, "<answer>Mira Oltan</answer>"
    >>> [compute_score("toy", text, ["Mira Oltan"], {"hops": 1}, search_cost=0.3)["score"]
    ...  for text in (s + r, "<search>q</search><answer>Arlo</answer>", "<search>q</search>" + r)]
    [0.5, 0.0, 1.0]
    """
    if metric not in METRICS:
        raise ValueError(f"compute_score: metric must be one of {METRICS}, got {metric!r}")
    if search_cost < 0 or not 0 <= search_cost_cap < 1:
        raise ValueError(f"compute_score: search_cost={search_cost} must be >= 0 and search_cost_cap="
                         f"{search_cost_cap} in [0, 1)")
    if search_cost and metric != "em":
        raise ValueError(f"compute_score: search_cost needs metric='em' (got {metric!r}): a partial-credit wrong "
                         "answer could outrank a charged correct one")
    if search_cost and format_penalty + search_cost_cap >= 1:
        raise ValueError(f"compute_score: format_penalty={format_penalty} + search_cost_cap={search_cost_cap} must "
                         "stay below 1, or a charged correct answer with broken tags could score below a wrong one")
    scores = qa_scores(solution_str, ground_truth, preset)
    reward = scores[metric] - (format_penalty if not scores["format_ok"] else 0.0)
    searches = count_searches(solution_str, preset)
    hops = (extra_info or {}).get("hops")
    extra = searches if hops is None else max(0, searches - int(hops))
    if search_cost and scores["em"] == 1.0:
        reward -= min(search_cost_cap, search_cost * extra)
    return {
        "score": float(reward),
        "em": scores["em"],
        "subem": scores["subem"],
        "f1": scores["f1"],
        "format_ok": scores["format_ok"],
        "answered": float(scores["answer"] is not None),
        "searches": float(searches),
        "over_search": float(hops is not None and searches > int(hops)),
    }

"""The agent model on QA rows through the standalone CoA loop, scored with the reward's own functions.

Per question: the response, EM / sub-EM / F1, format validity, the number of searches, the outcome, and — where the
row says whether search was needed (the toy world does) — whether the model acted exactly when it had to
(*when-to-act*). :func:`summarize` turns the records into the headline numbers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any, Sequence

from autocoa_verl.protocol import build_prompt
from autocoa_verl.reward import compute_score


def score_output(row: dict, output: Any, tokenizer: Any, preset: str) -> dict[str, Any]:
    """One question's record from its ``AgentLoopOutput``."""
    response = tokenizer.decode(output.response_ids)
    scores = compute_score(row.get("data_source"), response, row["golden_answers"], preset=preset)
    searches = int(output.extra_fields["coa_metrics"]["searches"])
    record = {"id": row["id"], "question": row["question"], "golden_answers": row["golden_answers"],
              "response": response, "outcome": output.extra_fields["coa_outcome"], "searches": searches,
              "response_tokens": len(output.response_ids),
              **{k: scores[k] for k in ("em", "subem", "f1", "format_ok")}}
    if "needs_search" in row:
        record["needs_search"] = bool(row["needs_search"])
        record["acted_when_needed"] = (searches > 0) == record["needs_search"]
    if "hops" in row:
        record["hops"] = int(row["hops"])
    return record


def summarize(records: Sequence[dict]) -> dict[str, Any]:
    """EM, F1, format validity, searches per question, when-to-act accuracy, EM by number of searches.

    >>> summarize([{"em": 1.0, "subem": 1.0, "f1": 1.0, "format_ok": 1.0, "searches": 1, "response_tokens": 9,
    ...             "acted_when_needed": True}, {"em": 0.0, "subem": 0.0, "f1": 0.5, "format_ok": 0.0,
    ...             "searches": 0, "response_tokens": 5, "acted_when_needed": False}])["when_to_act"]
    0.5
    """
    if not records:
        raise ValueError("summarize: no records")
    mean = lambda key: statistics.fmean(r[key] for r in records)  # noqa: E731
    summary = {"questions": len(records), "em": mean("em"), "subem": mean("subem"), "f1": mean("f1"),
               "format_ok": mean("format_ok"), "searches_per_question": mean("searches"),
               "response_tokens": mean("response_tokens")}
    judged = [r["acted_when_needed"] for r in records if "acted_when_needed" in r]
    if judged:
        summary["when_to_act"] = statistics.fmean(judged)
    by_searches = defaultdict(list)
    for r in records:
        by_searches[r["searches"]].append(r["em"])
    summary["em_by_searches"] = {str(k): {"questions": len(v), "em": statistics.fmean(v)}
                                 for k, v in sorted(by_searches.items())}
    return summary


async def evaluate_agent(rollout: Any, rows: Sequence[dict], preset: str, batch_size: int = 32,
                         progress: bool = True) -> list[dict]:
    """Runs ``rollout`` (a :class:`~autocoa_verl.agent.standalone.StandaloneRollout`) on ``rows`` (QA rows with
    ``question`` and ``golden_answers``) in batches, greedy (validation sampling); returns one record per row."""
    from tqdm import tqdm

    records = []
    with tqdm(total=len(rows), desc="agent model", disable=not progress) as bar:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            outputs = await rollout.run([{"raw_prompt": build_prompt(r["question"], preset)} for r in batch],
                                        validate=True)
            records += [score_output(r, o, rollout.tokenizer, preset) for r, o in zip(batch, outputs)]
            bar.update(len(batch))
    return records

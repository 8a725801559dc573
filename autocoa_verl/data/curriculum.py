"""RL questions that can teach: estimate the start policy's pass rate on each training question, keep the ones it
sometimes gets right and sometimes not (0 < pass rate < 1). A GRPO group whose rewards are all equal has zero
advantage everywhere and gives no gradient (DAPO's observation); filtering before training spends the rollouts on
groups that carry signal. With ``--greedy-wrong`` only the questions the policy answers wrong greedily (as evaluation
does) are sampled and kept: a GRPO step that only sharpens answers the policy already gives greedily raises the
sampled reward without changing what evaluation measures. ``--greedy-balanced`` keeps both kinds and alternates them.

Run: ``python -m autocoa_verl.data.curriculum --model MODEL --questions build/toy/train.jsonl
--corpus build/toy/corpus.jsonl --out build/rl/train_curriculum.parquet [--samples 4 --limit 256]`` (``--help``).
Writes the filtered verl parquet and, beside it, ``<out stem>.pass_rates.jsonl`` (per question: id, pass rate,
rewards).
Pass rates come from the RL rollout itself (the CoA loop, standalone, on a local vLLM engine, against a bm25
retriever of the corpus) and the training reward's scorer.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence, TypeVar

from autocoa_verl.errors import user_errors

REWARD_KEY = "score"
GREEDY_MODES = ("off", "wrong", "balanced")
T = TypeVar("T")


def select_by_pass_rate(rates: Mapping[str, float], low: float = 0.0, high: float = 1.0) -> list[str]:
    """The ids whose pass rate lies strictly between ``low`` and ``high``, in ``rates``' order.

    >>> select_by_pass_rate({"a": 0.0, "b": 0.25, "c": 1.0, "d": 0.75})
    ['b', 'd']
    """
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"pass-rate bounds must satisfy 0 <= low < high <= 1, got low={low}, high={high}")
    return [key for key, rate in rates.items() if low < rate < high]


def zero_variance_share(groups: Sequence[Sequence[float]]) -> float:
    """The share of GRPO groups whose rewards are all equal (they give no gradient).

    >>> zero_variance_share([[0, 0, 0], [1, 0, 1], [1, 1, 1], [0.5, 0.5]])
    0.75
    """
    if not groups:
        raise ValueError("zero_variance_share: no groups")
    return sum(max(g) == min(g) for g in groups) / len(groups)


def stratified_order(items: Sequence[T], key: Callable[[T], Hashable], seed: int = 0) -> list[T]:
    """``items`` dealt round-robin over their classes (``key``): each round takes one item of every class that has
    items left, classes in a shuffled order, items of a class in a shuffled order (``seed``). While every one of k
    classes lasts, each run of k consecutive items holds one of each, so a GRPO batch of k questions read in order
    (``data.shuffle=false``) sees every class, e.g. every hop count, instead of whatever one random draw gave it.

    >>> order = stratified_order(["0a", "0b", "1a", "1b", "2a", "3a"], key=lambda q: q[0], seed=0)
    >>> [sorted(q[0] for q in order[:4]), sorted(q[0] for q in order[4:])]
    [['0', '1', '2', '3'], ['0', '1']]
    """
    rng = random.Random(seed)
    classes: dict[Hashable, list[T]] = {}
    for item in items:
        classes.setdefault(key(item), []).append(item)
    for members in classes.values():
        rng.shuffle(members)
    order: list[T] = []
    while any(classes.values()):
        names = [name for name in sorted(classes, key=repr) if classes[name]]
        rng.shuffle(names)
        order += [classes[name].pop() for name in names]
    return order


def pass_rates(rollout, rows: Sequence[dict], samples: int, sampling: dict[str, Any],
               batch_size: int = 64, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Per question id: ``{"pass_rate", "rewards"}`` over ``samples`` rollouts at ``sampling``, scored by the
    training reward (:func:`autocoa_verl.reward.compute_score`). ``rollout`` is a ``StandaloneRollout``."""
    from tqdm import tqdm

    from autocoa_verl.protocol import build_prompt
    from autocoa_verl.reward import compute_score

    preset = rollout.config.coa.preset
    reward_kwargs = dict(rollout.config.reward.custom_reward_function.reward_kwargs)  # the training reward's metric
    jobs = [(row, s) for row in rows for s in range(samples)]
    rewards: dict[str, list[float]] = {str(row["id"]): [] for row in rows}
    with tqdm(total=len(jobs), desc="pass rates", unit="rollout", disable=not progress) as bar:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            outputs = rollout.run_sync([{"raw_prompt": build_prompt(row["question"], preset)} for row, _ in batch],
                                       validate=False, sampling_params=dict(sampling))
            for (row, _), output in zip(batch, outputs):
                text = rollout.tokenizer.decode(output.response_ids, skip_special_tokens=True)
                score = compute_score("toy_world", text, row["golden_answers"], **reward_kwargs)
                rewards[str(row["id"])].append(float(score[REWARD_KEY]))
            bar.update(len(batch))
    return {key: {"pass_rate": statistics.fmean(values), "rewards": values} for key, values in rewards.items()}


def measure(rollout, rows: Sequence[dict], samples: int, temperature: float, greedy: str = "off",
            progress: bool = True) -> dict[str, dict[str, Any]]:
    """Per question id: its :func:`pass_rates` at ``temperature``. With ``greedy`` "wrong" or "balanced", each
    question is first answered greedily, as evaluation does (``"greedy"``: that answer's reward). "wrong" then samples
    only the ones it gets wrong; the others carry no ``pass_rate`` and are never kept. "balanced" samples them all.
    Sampled rewards rise when RL only sharpens the policy towards the answers it already gives greedily; the
    greedy-wrong questions are where the greedy answer must change."""
    from autocoa_verl.agent.standalone import sampling_params

    if greedy not in GREEDY_MODES:
        raise ValueError(f"greedy must be one of {GREEDY_MODES}, got {greedy!r}")
    sampling = sampling_params(temperature=temperature)
    if greedy == "off":
        return pass_rates(rollout, rows, samples, sampling, progress=progress)
    first = pass_rates(rollout, rows, 1, sampling_params(temperature=0.0), progress=progress)
    todo = rows if greedy == "balanced" else [row for row in rows if first[str(row["id"])]["pass_rate"] < 1.0]
    sampled = pass_rates(rollout, todo, samples, sampling, progress=progress) if todo else {}
    return {key: {"greedy": g["pass_rate"], **sampled.get(key, {})} for key, g in first.items()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Keep the RL training questions the start policy sometimes "
                                                 "answers right and sometimes not (0 < pass rate < 1).")
    parser.add_argument("--model", required=True, help="the start policy (HF directory)")
    parser.add_argument("--questions", required=True, help="training questions (FlashRAG jsonl)")
    parser.add_argument("--retriever-url", help="a running retriever server (default: serve a bm25 index of --corpus "
                                                "on loopback for the run)")
    parser.add_argument("--corpus", help="corpus jsonl for the bm25 retriever (without --retriever-url)")
    parser.add_argument("--index-dir", help="bm25 index (built if missing; default: beside --out)")
    parser.add_argument("--out", required=True, help="filtered verl parquet to write")
    parser.add_argument("--samples", type=int, default=4, help="rollouts per question (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=1.0, help="as RL's rollout (default %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--low", type=float, default=0.0, help="keep pass rate > LOW (default %(default)s)")
    parser.add_argument("--high", type=float, default=1.0, help="keep pass rate < HIGH (default %(default)s)")
    parser.add_argument("--response-length", type=int, default=768, help="as data.max_response_length")
    parser.add_argument("--min-rows", type=int, default=1,
                        help="repeat the kept questions up to this many rows (at least data.train_batch_size: verl "
                             "drops an incomplete last batch)")
    parser.add_argument("--stratify", metavar="FIELD",
                        help="write the kept rows dealt round-robin over this field's values (e.g. hops), so that "
                             "RL batches read in order (data.shuffle=false) hold one question of each")
    greedy = parser.add_mutually_exclusive_group()
    greedy.add_argument("--greedy-wrong", action="store_const", dest="greedy", const="wrong", default="off",
                        help="answer each question greedily first and sample (and keep) only those it gets wrong: "
                             "RL then trains where evaluation's greedy answer must change (alone, on the toy world, "
                             "it taught the policy to stop after one search: learning_state_gw.md)")
    greedy.add_argument("--greedy-balanced", action="store_const", dest="greedy", const="balanced",
                        help="answer each question greedily too, and write the kept ones alternating between those "
                             "answered wrong and right greedily, while both last")
    parser.add_argument("--keep-all-if-none", action="store_true",
                        help="write every question (with a warning) when none has a mixed pass rate, instead of "
                             "failing")
    parser.add_argument("--preset", default="search_r1", help="tag protocol (default %(default)s)")
    return parser


def _measure(args: argparse.Namespace, rows: list[dict], index_dir: Path) -> dict[str, dict[str, Any]]:
    """:func:`pass_rates` of ``args.model`` on ``rows``, against ``args.retriever_url`` or a bm25 of the corpus."""
    from contextlib import nullcontext

    from autocoa_verl.agent.standalone import LocalVLLMServer, StandaloneRollout, compose_rl_config
    from retriever_server.serve import serve_bm25

    with nullcontext(args.retriever_url) if args.retriever_url else serve_bm25(args.corpus, index_dir) as url:
        config = compose_rl_config([f"actor_rollout_ref.rollout.response_length={args.response_length}",
                                    f"coa.retriever.url={url}", f"coa.preset={args.preset}"])
        server = LocalVLLMServer(args.model, max_model_len=2048)
        try:
            return measure(StandaloneRollout(config, server), rows, args.samples, args.temperature, args.greedy)
        finally:
            server.shutdown()


@user_errors
def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.samples < 2:
        parser.error("--samples must be >= 2 (one sample cannot tell a mixed question)")
    if not args.retriever_url and not args.corpus:
        parser.error("give --retriever-url or --corpus")
    if not 0.0 <= args.low < args.high <= 1.0:
        parser.error(f"--low/--high must satisfy 0 <= low < high <= 1, got {args.low}, {args.high}")
    if args.greedy == "balanced" and args.stratify:
        parser.error("--greedy-balanced orders the rows itself; drop --stratify")

    from autocoa_verl.data.qa_files import read_qa_jsonl, write_verl_parquet

    rows = read_qa_jsonl(args.questions)[: args.limit]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rates = _measure(args, rows, Path(args.index_dir) if args.index_dir else out.parent / "bm25-index")
    sampled = {k: v["pass_rate"] for k, v in rates.items() if "pass_rate" in v}
    keep = set(select_by_pass_rate(sampled, args.low, args.high))
    rates_path = out.with_suffix(".pass_rates.jsonl")
    rates_path.write_text("".join(json.dumps({"id": k, **v}) + "\n" for k, v in rates.items()))
    kept = [row for row in rows if str(row["id"]) in keep]
    if not kept:
        message = (f"no question has {args.low} < pass rate < {args.high} (see {rates_path}): the policy solves all "
                   "or none; train more SFT, or sample more")
        if not args.keep_all_if_none:
            raise SystemExit(message)
        print(f"warning: {message}; writing all {len(rows)} questions (GRPO groups will carry no signal)")
        kept = rows
    kept = [kept[i % len(kept)] for i in range(max(len(kept), args.min_rows))]
    if args.stratify:
        missing = next((row for row in kept if args.stratify not in row), None)
        if missing is not None:
            raise SystemExit(f"{args.questions}: row id {missing['id']!r} has no field {args.stratify!r} to "
                             "stratify by")
        kept = stratified_order(kept, key=lambda row: row[args.stratify])
    if args.greedy == "balanced":
        kept = stratified_order(kept, key=lambda row: rates[str(row["id"])]["greedy"] == 1.0)
    write_verl_parquet(kept, out, data_source="toy_world", split="train", preset=args.preset)
    wrong = sum(v.get("greedy", 1.0) < 1.0 for v in rates.values())
    greedy = {"off": "", "wrong": f" {wrong} answered wrong greedily and sampled;",
              "balanced": f" {wrong} answered wrong greedily;"}[args.greedy]
    mean = statistics.fmean(sampled.values()) if sampled else float("nan")
    print(f"{len(rows)} questions,{greedy} mean pass rate {mean:.3f}; {len(keep)} with {args.low} < pass rate < "
          f"{args.high}; wrote {len(kept)} -> {out} (rates: {rates_path})")


if __name__ == "__main__":
    main()

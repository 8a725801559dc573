"""The toy-world oracle teacher: correct trajectories written from each question's gold chain, deterministically.

Run: ``python -m autocoa_verl.data.oracle QUESTIONS.jsonl CORPUS.jsonl OUT.parquet --tokenizer MODEL
[--pairs PAIRS.parquet]``.

A trajectory is a list of segments ``{"source": "model" | "env", "text": ...}`` so that every consumer knows which
text the model wrote and which the environment returned, without re-parsing tags. Search questions become
think -> search the sub-question -> read what the retriever returns -> ... -> answer (CoA); questions that need no
search become think -> answer (CoT), with the working written out for arithmetic.

Observations are what the rollout will show: the retriever's top-k for the oracle's query, in the retriever's
order, rendered by :func:`~autocoa_verl.agent.observers.retrieved_block` under the loop's token budget. A question
whose gold passage is not among the top-k at some hop is left out (a correct teacher could not have answered it).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Sequence

from autocoa_verl.data.sft_files import trajectory_row, write_sft_parquet
from autocoa_verl.errors import user_errors
from autocoa_verl.protocol import DEFAULT_PRESET, build_prompt, get_preset


def _answer(text: str, preset) -> str:
    return f"{preset.answer_open}{text}{preset.answer_close}"


_SUM = re.compile(r"What is (\d+) plus (\d+)\?")


def no_search_thought(row: dict) -> str:
    """The reasoning of a question that needs no search: the working of a sum, tens then units; otherwise a pointer
    to the question.

    >>> no_search_thought({"question": "What is 6 plus 24?", "kind": "arithmetic"})
    '6 plus 24: 6 + 20 = 26, 26 + 4 = 30. No search is needed.'
    """
    match = _SUM.search(row["question"]) if row.get("kind") == "arithmetic" else None
    if match is None:
        return "The question itself tells me what I need; no search is needed."
    a, b = map(int, match.groups())
    tens, units = b - b % 10, b % 10
    steps = [f"{a} + {tens} = {a + tens}"] if tens else []
    if units or not tens:
        steps.append(f"{a + tens} + {units} = {a + b}")
    return f"{a} plus {b}: {', '.join(steps)}. No search is needed."


def _aspects(row: dict) -> list[str]:
    """What each chain step looks up, as the search query names it ("birthplace", "founder", ...): the step's query
    without the entity it starts from."""
    from autocoa_verl.data.toy_world import RELATIONS

    return [RELATIONS[name].query.replace("{x}", "").strip() for name in row["kind"].split("+")]


# how a search question's thoughts track the plan (``--plan``): "state" names no number, and every thought after a
# search restates the steps left, so that whether to search again is read off the thought before it; "count" (the
# format before it) opens with the number of searches, which the model guessed first and then stopped by: 2- and
# 3-hop questions answered one search short (learning_2h.md against learning_state.md)
PLANS = ("state", "count")


def oracle_trajectory(row: dict, observations: Sequence[str], preset: str = DEFAULT_PRESET,
                      plan: str = "state") -> list[dict[str, str]]:
    """The oracle's trajectory for one toy-world question row (with ``chain``, ``kind`` and ``needs_search``).

    A search question opens with a plan that names what each search looks up (so the number of hops is decided
    once, from the question); each later thought reads the found fact, restates the steps left and forms the next
    query from them; the last says nothing is left and answers::

        <think>I need to look up: Arlo Venn birthplace, then founder.</think>
        <search> Arlo Venn birthplace </search>  [observation]
        <think>Arlo Venn birthplace: Quessly. Left: founder. Next: Quessly founder.</think>
        <search> Quessly founder </search>  [observation]
        <think>Quessly founder: Mira Oltan. Nothing is left.</think><answer>Mira Oltan</answer>

    With ``plan="count"`` the plan opens with the number of searches and no thought restates what is left::

        <think>I need 2 searches: Arlo Venn birthplace, then founder.</think>
        ...
        <think>Arlo Venn birthplace: Quessly. Next: Quessly founder.</think>
        ...
        <think>Quessly founder: Mira Oltan. That was the last search.</think><answer>Mira Oltan</answer>

    Args:
        row: the question, with its gold chain.
        observations: the observation block returned for each chain step's query (see :class:`Observations`).
        preset: the tag protocol.
        plan: how the thoughts track the plan, one of :data:`PLANS`.
    """
    if plan not in PLANS:
        raise ValueError(f"plan {plan!r}: expected one of {', '.join(PLANS)}")
    p = get_preset(preset)
    answer = row["golden_answers"][0]
    if not row["needs_search"]:
        thought = f"{p.think_open}{no_search_thought(row)}{p.think_close}"
        return [{"source": "model", "text": thought + _answer(answer, p)}]
    chain = row["chain"]
    if len(observations) != len(chain):
        raise ValueError(f"row {row['id']!r}: {len(chain)} chain steps but {len(observations)} observations")
    aspects = _aspects(row)
    n = len(chain)
    steps = ", then ".join([chain[0]["query"]] + aspects[1:])
    segments = []
    for i, (step, observation) in enumerate(zip(chain, observations)):
        if i == 0:
            thought = (f"I need {n} search{'es' if n > 1 else ''}: {steps}." if plan == "count"
                       else f"I need to look up: {steps}.")
        else:
            left = f" Left: {', then '.join(aspects[i:])}." if plan == "state" else ""
            thought = f"{chain[i - 1]['query']}: {chain[i - 1]['answer']}.{left} Next: {step['query']}."
        action = f"{p.search_open} {step['query']} {p.search_close}"
        segments.append({"source": "model", "text": f"{p.think_open}{thought}{p.think_close}\n{action}"})
        segments.append({"source": "env", "text": observation})
    done = "That was the last search." if plan == "count" else "Nothing is left."
    final = f"{p.think_open}{chain[-1]['query']}: {answer}. {done}{p.think_close}"
    segments.append({"source": "model", "text": final + _answer(answer, p)})
    return segments


# the RL config's defaults (coa.retriever.topk, coa.max_observation_tokens); a test ties them
ROLLOUT_TOPK = 3
ROLLOUT_OBSERVATION_TOKENS = 256


class Observations:
    """What the agent loop's ``RetrieverObserver`` appends for a query, computed in-process: the retriever's top-k,
    rendered by :func:`retrieved_block` with the loop's token budget and the policy's tokenizer.

    Args:
        retriever: a ``retriever_server`` backend (the index the rollouts' server serves).
        tokenizer: the policy's tokenizer (the budget is in its tokens).
        preset: the tag protocol.
        topk: passages per query (``coa.retriever.topk``).
        max_tokens: the observation budget (``coa.max_observation_tokens``).
    """

    def __init__(self, retriever, tokenizer, preset: str = DEFAULT_PRESET, topk: int = ROLLOUT_TOPK,
                 max_tokens: int = ROLLOUT_OBSERVATION_TOKENS):
        self.retriever, self.tokenizer, self.preset = retriever, tokenizer, get_preset(preset)
        self.topk, self.max_tokens = topk, max_tokens

    def __call__(self, queries: Sequence[str]) -> list[tuple[str, list[str]]]:
        """Per query: the observation block and the ids of the passages it shows, best first."""
        from autocoa_verl.agent.observers import retrieved_block

        out = []
        for docs in self.retriever.batch_search(list(queries), topk=self.topk):
            text, _ = retrieved_block([d["contents"] for d in docs], self.tokenizer, self.preset, self.max_tokens)
            out.append((text, [d["id"] for d in docs]))
        return out


def answers_by_kind(rows: list[dict]) -> dict[str, list[str]]:
    """Every question's first gold answer, by question kind (the pool wrong guesses are drawn from)."""
    pool: dict[str, list[str]] = {}
    for r in rows:
        pool.setdefault(r.get("kind"), []).append(r["golden_answers"][0])
    return pool


def distractor(row: dict, pool: dict[str, list[str]]) -> str:
    """A wrong answer of the right kind, chosen deterministically: another question's gold answer."""
    wrong = [a for a in pool.get(row.get("kind"), []) if a not in row["golden_answers"]]
    return wrong[sum(map(ord, str(row["id"]))) % len(wrong)] if wrong else "I do not know"


def oracle_pairs(row: dict, observations: Sequence[str], wrong_answer: str, preset: str = DEFAULT_PRESET,
                 plan: str = "state") -> list[dict[str, Any]]:
    """Step-level *when to act* pairs for one question: a shared prefix, a chosen and a rejected continuation.

    At each step of a search question the prefix ends with the thought that names the unknown fact; *chosen*
    searches for it, *rejected* guesses an answer (``wrong_answer``) without searching. For a question that needs no
    search, *chosen* reasons to the answer and *rejected* searches anyway. ``observations`` and ``plan`` as for
    :func:`oracle_trajectory`.
    """
    p = get_preset(preset)
    segments = oracle_trajectory(row, observations, preset, plan)
    model = lambda text: [{"source": "model", "text": text}]  # noqa: E731
    if not row["needs_search"]:
        question = row["question"]
        search = (f"{p.think_open}I do not know this: {question}{p.think_close}\n"
                  f"{p.search_open} {question} {p.search_close}")
        return [{"prefix": [], "chosen": segments, "rejected": model(search), "chosen_acts": False}]
    pairs = []
    for i, step in enumerate(row["chain"]):
        thought, action = segments[2 * i]["text"].split("\n", 1)
        guess = f"{p.think_open}It is probably {wrong_answer}.{p.think_close}{_answer(wrong_answer, p)}"
        pairs.append({"prefix": segments[: 2 * i] + model(thought + "\n"), "chosen": model(action),
                      "rejected": model(guess), "chosen_acts": True})
    return pairs


def write_oracle_parquet(questions_path: str | Path, out_path: str | Path, observations: Observations,
                         pairs_path: str | Path | None = None, plan: str = "state") -> dict[str, int]:
    """Writes the oracle's trajectories and, given ``pairs_path``, its contrastive pairs, in the formats of
    :mod:`autocoa_verl.data.sft_files` (``plan`` as for :func:`oracle_trajectory`). Returns the counts:
    ``trajectories``, ``pairs``, and ``skipped`` (questions whose gold passage the retriever did not return at some
    hop)."""
    from autocoa_verl.data.qa_files import read_qa_jsonl

    preset = observations.preset.name
    rows = read_qa_jsonl(questions_path)
    for row in rows:
        if "chain" not in row or "needs_search" not in row:
            raise ValueError(f"{questions_path}: row {row['id']!r} has no gold 'chain'/'needs_search' "
                             "(the oracle needs toy-world questions)")
    steps = [step for row in rows for step in row["chain"]]
    found = iter(observations([step["query"] for step in steps]))
    trajectories, pairs, pool, skipped = [], [], answers_by_kind(rows), 0
    for row in rows:
        seen = [next(found) for _ in row["chain"]]
        if any(step["doc_id"] not in ids for step, (_, ids) in zip(row["chain"], seen)):
            skipped += 1
            continue
        texts = [text for text, _ in seen]
        prompt = build_prompt(row["question"], preset)
        trajectories.append(trajectory_row(str(row["id"]), prompt, oracle_trajectory(row, texts, preset, plan)))
        for i, pair in enumerate(oracle_pairs(row, texts, distractor(row, pool), preset, plan)):
            pairs.append({"id": f"{row['id']}-step{i}", "prompt": prompt, **pair})
    write_sft_parquet(trajectories, out_path, "trajectories")
    if pairs_path is not None:
        write_sft_parquet(pairs, pairs_path, "pairs")
    return {"trajectories": len(trajectories), "pairs": len(pairs) if pairs_path is not None else 0,
            "skipped": skipped}


@user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write oracle trajectories (SFT-2/3) and contrastive pairs (SFT-1) "
                                                 "for toy-world questions, with the observations a bm25 retriever "
                                                 "returns at rollout time.")
    parser.add_argument("questions", help="toy-world question jsonl (with gold chains)")
    parser.add_argument("corpus", help="toy-world corpus jsonl")
    parser.add_argument("output", help="trajectories parquet to write")
    parser.add_argument("--tokenizer", required=True, help="the policy (a model directory): observation budgets are "
                                                           "counted in its tokens")
    parser.add_argument("--index-dir", help="bm25 index of the corpus (built there if missing or stale; default: "
                                            "a bm25-index directory beside the output)")
    parser.add_argument("--pairs", help="also write step-level contrastive pairs to this parquet")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="tag protocol (search_r1|autocoa)")
    parser.add_argument("--topk", type=int, default=ROLLOUT_TOPK,
                        help="passages per search, as coa.retriever.topk (default %(default)s)")
    parser.add_argument("--max-observation-tokens", type=int, default=ROLLOUT_OBSERVATION_TOKENS,
                        help="observation budget, as coa.max_observation_tokens (default %(default)s)")
    parser.add_argument("--plan", choices=PLANS, default="state",
                        help="how thoughts track the plan: state (each restates the steps left) or count (the first "
                             "says how many searches: the format of reports before learning_state.md); default "
                             "%(default)s")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from retriever_server.bm25 import BM25Retriever

    index_dir = Path(args.index_dir) if args.index_dir else Path(args.output).parent / "bm25-index"
    retriever = BM25Retriever.open_or_build(args.corpus, index_dir)
    observations = Observations(retriever, AutoTokenizer.from_pretrained(args.tokenizer), args.preset, args.topk,
                                args.max_observation_tokens)
    counts = write_oracle_parquet(args.questions, args.output, observations, args.pairs, args.plan)
    print(f"wrote {counts['trajectories']} oracle trajectories to {args.output}"
          + (f" and {counts['pairs']} pairs to {args.pairs}" if args.pairs else "")
          + f"; {counts['skipped']} questions left out (gold passage not in the retriever's top-{args.topk})")


if __name__ == "__main__":
    main()

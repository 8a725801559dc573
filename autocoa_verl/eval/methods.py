"""The evaluated methods, all on one local engine (``LocalVLLMServer`` or anything with verl's ``generate``) and one
retriever client. Each turns one QA row into one record (see :func:`record`).

    direct  answer at once                      cot    think, then answer
    rag     retrieve with the question, answer  react  an external controller runs Thought / Action / Observation
    react_fewshot  react after worked examples written from training-split gold chains (as the ReAct paper does)
    agent   the CoA agent loop in standalone mode: exactly the training rollout code

Baselines are asked to answer inside ``<answer>`` tags so that one scorer (the reward's) reads every method; a
direct, CoT or RAG generation without the tags is scored as a whole (a small model often answers in a plain sentence),
and ``format_ok`` records whether the tags were used.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Callable, Sequence

from autocoa_verl.agent.retriever_client import RetrieverClient
from autocoa_verl.protocol import build_prompt, passage_title_and_text
from autocoa_verl.reward.scoring import qa_scores

METHODS = ("direct", "cot", "rag", "react", "react_fewshot", "agent")
ANSWER_FORMAT = ("Write the final answer, a few words only, inside <answer> and </answer>, e.g. "
                 "<answer> Beijing </answer>.")
PROMPTS = {
    "direct": "Answer the question directly, without explanation. " + ANSWER_FORMAT,
    "cot": "Think step by step inside <think> and </think>, then answer. " + ANSWER_FORMAT,
    "rag": "Answer the question using the documents below. " + ANSWER_FORMAT,
    "react": ("Solve the question by interleaving Thought, Action and Observation steps. A Thought reasons about the "
              "situation. An Action is either Search[query], which returns documents as the next Observation, or "
              "Finish[answer], which gives the final short answer and ends.\nThought:"),
}
REACT_ACTION = re.compile(r"Action\s*\d*\s*:\s*(Search|Finish)\s*\[(.*?)\]", re.IGNORECASE | re.DOTALL)
REACT_FEWSHOT = ("Solve the question by interleaving Thought, Action and Observation steps. A Thought reasons about "
                 "the situation. An Action is either Search[query], which returns documents as the next Observation, "
                 "or Finish[answer], which gives the final short answer and ends. Examples:")


def pick_exemplars(rows: Sequence[dict], count: int = 3) -> list[dict]:
    """``count`` worked examples from training rows with gold chains: the first row of each kind in the order 2-hop,
    1-hop, no search, 3-hop (round-robin while more are wanted).

    Raises:
        ValueError: the rows carry no gold chains (``chain``/``needs_search``: toy-world style), or too few.
    """
    if any("chain" not in r or "needs_search" not in r for r in rows):
        raise ValueError("react_fewshot exemplars need rows with gold chains ('chain', 'needs_search'): give "
                         "react_exemplars a toy-world training split")
    by_hops: dict[int, list[dict]] = {}
    for r in rows:
        by_hops.setdefault(len(r["chain"]), []).append(r)
    order = [h for h in (2, 1, 0, 3) if h in by_hops]
    picked: list[dict] = []
    while len(picked) < count and any(by_hops[h] for h in order):
        for h in order:
            if by_hops[h] and len(picked) < count:
                picked.append(by_hops[h].pop(0))
    if len(picked) < count:
        raise ValueError(f"react_fewshot: {count} exemplars wanted, the rows give {len(picked)}")
    return picked


def react_exemplar(row: dict, observations: Sequence[str]) -> str:
    """One worked ReAct example from a row's gold chain; ``observations``: the documents text for each step's query
    (what the controller would return).

    >>> print(react_exemplar({"question": "Where was Arlo Venn born?", "golden_answers": ["Quessly"], "chain": [
    ...     {"question": "Where was Arlo Venn born?", "query": "Arlo Venn birthplace", "answer": "Quessly"}]},
    ...     ["Doc 1 (Arlo Venn): Arlo Venn was born in Quessly."]))
    Question: Where was Arlo Venn born?
    Thought 1: I need to find out: Where was Arlo Venn born?
    Action 1: Search[Arlo Venn birthplace]
    Observation 1: Doc 1 (Arlo Venn): Arlo Venn was born in Quessly.
    Thought 2: The answer is Quessly.
    Action 2: Finish[Quessly]
    """
    from autocoa_verl.data.oracle import no_search_thought

    lines, answer = [f"Question: {row['question']}"], row["golden_answers"][0]
    if not row["chain"]:
        return "\n".join(lines + [f"Thought 1: {no_search_thought(row)}", f"Action 1: Finish[{answer}]"])
    for i, (step, documents) in enumerate(zip(row["chain"], observations), 1):
        found = f"That gives {row['chain'][i - 2]['answer']}. " if i > 1 else ""
        lines += [f"Thought {i}: {found}I need to find out: {step['question']}", f"Action {i}: Search[{step['query']}]",
                  f"Observation {i}: {documents}"]
    n = len(row["chain"]) + 1
    return "\n".join(lines + [f"Thought {n}: The answer is {answer}.", f"Action {n}: Finish[{answer}]"])


def documents_text(passages: Sequence[Any]) -> str:
    lines = []
    for i, passage in enumerate(passages, 1):
        title, text = passage_title_and_text(passage.contents)
        lines.append(f"Doc {i} ({title}): {text}")
    return "\n".join(lines)


def record(row: dict, method: str, response: str, answer_text: str, searches: int, tokens: int, wall_s: float,
           format_ok: float | None = None, preset: str = "search_r1") -> dict[str, Any]:
    """One question's record: the trajectory, the scores (the reward's scorer on ``answer_text``), actions, tokens,
    wall time, and *when-to-act* / hops where the row has them."""
    scores = qa_scores(answer_text, row["golden_answers"], preset)
    out = {"id": row["id"], "question": row["question"], "golden_answers": row["golden_answers"], "method": method,
           "response": response, "answer": scores["answer"], "em": scores["em"], "subem": scores["subem"],
           "f1": scores["f1"], "format_ok": scores["format_ok"] if format_ok is None else format_ok,
           "searches": searches, "response_tokens": tokens, "wall_s": wall_s}
    if "needs_search" in row:
        out["needs_search"] = bool(row["needs_search"])
        out["acted_when_needed"] = (searches > 0) == out["needs_search"]
    if "hops" in row:
        out["hops"] = int(row["hops"])
    return out


def answered(row: dict, method: str, response: str, text: str, searches: int, tokens: int, start: float) -> dict:
    """A one-shot baseline's record: the tagged answer, or else the whole generation, scored."""
    tagged = "<answer>" in text and "</answer>" in text
    answer_text = text if tagged else f"<answer>{text.strip()}</answer>"
    return record(row, method, response, answer_text, searches, tokens, time.perf_counter() - start,
                  format_ok=float(tagged))


class Methods:
    """The methods over one engine and one retriever.

    Args:
        server: the engine (verl's ``generate(request_id, *, prompt_ids, sampling_params)``).
        tokenizer: the model's tokenizer (chat template).
        retriever: a :class:`RetrieverClient` (``rag``, ``react``; ``agent`` uses the loop's own).
        rollout_factory: builds the agent's ``StandaloneRollout`` (called once).
        max_tokens: generation budget per baseline turn (the agent's response budget is its config's).
        max_actions: ReAct's search limit (the agent's is ``coa.max_actions``).
        sampling: ``temperature``, ``top_p`` for all methods.
        topk: passages per search (rag, react).
        exemplars: training rows with gold chains for ``react_fewshot`` (:func:`pick_exemplars`).
    """

    def __init__(self, server: Any, tokenizer: Any, retriever: RetrieverClient | None,
                 rollout_factory: Callable[[], Any], max_tokens: int = 256, max_actions: int = 4,
                 sampling: dict[str, float] | None = None, topk: int = 3, exemplars: Sequence[dict] = ()):
        self.server, self.tokenizer, self.retriever = server, tokenizer, retriever
        self.rollout_factory, self._rollout = rollout_factory, None
        self.max_tokens, self.max_actions, self.topk = max_tokens, max_actions, topk
        self.sampling = dict(sampling or {"temperature": 0.0, "top_p": 1.0})
        self.exemplars, self._fewshot = list(exemplars), None

    async def fewshot_instruction(self) -> str:
        """ReAct's instruction followed by the worked examples (their observations fetched once, from the same
        retriever and top-k the method searches with)."""
        if self._fewshot is None:
            if not self.exemplars:
                raise ValueError("react_fewshot needs exemplars (eval config: react_exemplars=TRAIN_SPLIT.jsonl)")
            examples = [react_exemplar(row, [await self._search(step["query"]) for step in row["chain"]])
                        for row in self.exemplars]
            self._fewshot = REACT_FEWSHOT + "\n\n" + "\n\n".join(examples) + "\n\nNow the real question."
        return self._fewshot

    def _ids(self, instruction: str, question: str, assistant: str = "") -> list[int]:
        messages = [{"role": "user", "content": f"{instruction}\nQuestion: {question.strip()}"}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer.encode(text + assistant, add_special_tokens=False)

    async def _generate(self, request_id: str, prompt_ids: list[int], stop: list[str]) -> tuple[str, int]:
        params = {**self.sampling, "max_tokens": self.max_tokens, "stop": stop, "include_stop_str_in_output": True}
        output = await self.server.generate(request_id, prompt_ids=prompt_ids, sampling_params=params)
        return self.tokenizer.decode(output.token_ids, skip_special_tokens=True), len(output.token_ids)

    async def _search(self, query: str) -> str:
        if self.retriever is None:
            raise ValueError("this method needs a retriever (retriever_url)")
        return documents_text((await self.retriever.search([query], topk=self.topk))[0])

    async def run(self, method: str, rows: Sequence[dict], sample: int) -> list[dict]:
        if method == "agent":
            return await self._agent(rows)
        if method == "react_fewshot":
            await self.fewshot_instruction()  # once, before the rows run concurrently
        one = {"direct": self._single, "cot": self._single, "rag": self._rag, "react": self._react,
               "react_fewshot": self._react}[method]
        return list(await asyncio.gather(*(one(method, row, f"{method}-{sample}-{row['id']}") for row in rows)))

    async def _single(self, method: str, row: dict, rid: str) -> dict:
        start = time.perf_counter()
        text, tokens = await self._generate(rid, self._ids(PROMPTS[method], row["question"]), ["</answer>"])
        return answered(row, method, text, text, 0, tokens, start)

    async def _rag(self, method: str, row: dict, rid: str) -> dict:
        start = time.perf_counter()
        docs = await self._search(row["question"])
        text, tokens = await self._generate(rid, self._ids(f"{PROMPTS['rag']}\n{docs}", row["question"]),
                                            ["</answer>"])
        return answered(row, method, f"[retrieved]\n{docs}\n[answer]\n{text}", text, 1, tokens, start)

    async def _react(self, method: str, row: dict, rid: str) -> dict:
        """The controller owns the switches: it stops generation at ``Observation``, parses the action, searches,
        writes the observation, and ends on ``Finish[...]``, after ``max_actions`` searches, or on no action."""
        fewshot = method == "react_fewshot"
        instruction = await self.fewshot_instruction() if fewshot else PROMPTS["react"]
        start, transcript, tokens, searches, answer = time.perf_counter(), "Thought 1:" if fewshot else " ", 0, 0, None
        for turn in range(self.max_actions + 1):
            text, n = await self._generate(f"{rid}-{turn}", self._ids(instruction, row["question"], transcript),
                                           ["Observation"])
            transcript, tokens = transcript + text, tokens + n
            actions = REACT_ACTION.findall(text)
            if not actions:
                break
            kind, argument = actions[-1]
            if kind.lower() == "finish":
                answer = argument.strip()
                break
            if searches == self.max_actions:
                break
            searches += 1
            documents = await self._search(argument.strip())
            transcript = transcript.removesuffix("Observation").rstrip()
            if fewshot:  # the exemplars number their steps
                transcript += f"\nObservation {searches}: {documents}\nThought {searches + 1}:"
            else:
                transcript += f"\nObservation: {documents}\nThought:"
        answer_text = f"<answer>{answer}</answer>" if answer is not None else ""
        return record(row, method, transcript.strip(), answer_text, searches, tokens, time.perf_counter() - start,
                      format_ok=float(answer is not None))

    async def _agent(self, rows: Sequence[dict]) -> list[dict]:
        from autocoa_verl.agent.standalone import sampling_params

        if self._rollout is None:
            self._rollout = self.rollout_factory()
        rollout = self._rollout
        preset = rollout.config.coa.preset

        async def one(row: dict) -> dict:
            start = time.perf_counter()
            (output,) = await rollout.run([{"raw_prompt": build_prompt(row["question"], preset)}],
                                          sampling_params=sampling_params(**self.sampling))
            response = rollout.tokenizer.decode(output.response_ids, skip_special_tokens=True)
            out = record(row, "agent", response, response, int(output.extra_fields["coa_metrics"]["searches"]),
                         int(sum(output.response_mask)), time.perf_counter() - start, preset=preset)
            out["outcome"] = output.extra_fields["coa_outcome"]
            return out

        return list(await asyncio.gather(*(one(row) for row in rows)))

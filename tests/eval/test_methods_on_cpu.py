"""The methods' logic with a scripted model (the controller, the prompts, the scoring) and a real bm25 server."""

import asyncio

import pytest

from autocoa_verl.agent.retriever_client import RetrieverClient
from autocoa_verl.eval.methods import Methods
from tests.agent.fakes import ScriptedServer

ROW = {"id": "q1", "question": "Who founded the Popol Guild?", "golden_answers": ["Mira Oltan"], "hops": 1,
       "needs_search": True}


def run(tokenizer, turns, method, url=None):
    server = ScriptedServer(tokenizer, turns)

    async def go():
        retriever = RetrieverClient(url) if url else None
        try:
            return await Methods(server, tokenizer, retriever, rollout_factory=None, max_actions=2, topk=2).run(
                method, [ROW], sample=0)
        finally:
            if retriever:
                await retriever.aclose()

    (record,) = asyncio.run(go())
    return record, server


def test_direct_answer_is_scored_by_the_reward_scorer(tiny_tokenizer):
    record, server = run(tiny_tokenizer, ["<answer> Mira Oltan </answer> and more"], "direct")
    assert (record["em"], record["searches"], record["answer"]) == (1.0, 0, "Mira Oltan")
    assert server.calls[0]["stop"] == ["</answer>"]
    assert record["acted_when_needed"] is False  # it needed a search and did none
    assert "directly" in tiny_tokenizer.decode(server.calls[0]["prompt_ids"])


def test_rag_retrieves_with_the_question_once(tiny_tokenizer, bm25_server):
    record, server = run(tiny_tokenizer, ["<answer>Nobody</answer>"], "rag", bm25_server.url)
    prompt = tiny_tokenizer.decode(server.calls[0]["prompt_ids"])
    assert "Doc 1 (" in prompt and "Doc 2 (" in prompt and "Doc 3 (" not in prompt  # topk=2
    assert (record["searches"], record["em"]) == (1, 0.0)


def test_react_controller_searches_observes_and_finishes(tiny_tokenizer, bm25_server):
    turns = [" I need the founder.\nAction: Search[Popol Guild founder]\nObservation: made up by the model",
             " Found it.\nAction: Finish[Mira Oltan]"]
    record, server = run(tiny_tokenizer, turns, "react", bm25_server.url)
    assert (record["searches"], record["em"], record["format_ok"]) == (1, 1.0, 1.0)
    second_prompt = tiny_tokenizer.decode(server.calls[1]["prompt_ids"])
    # generation stopped at "Observation:"; the controller wrote the retriever's documents there, not the model
    assert "made up by the model" not in second_prompt and "Observation: Doc 1 (" in second_prompt
    assert record["response"].endswith("Finish[Mira Oltan]")


def test_react_without_an_action_ends_unanswered(tiny_tokenizer, bm25_server):
    record, _ = run(tiny_tokenizer, [" I just ramble."], "react", bm25_server.url)
    assert (record["searches"], record["em"], record["format_ok"], record["answer"]) == (0, 0.0, 0.0, None)


def test_react_stops_at_max_actions(tiny_tokenizer, bm25_server):
    turns = [" Action: Search[a]", " Action: Search[b]", " Action: Search[c]"]
    record, server = run(tiny_tokenizer, turns, "react", bm25_server.url)
    assert record["searches"] == 2 and len(server.calls) == 3 and record["format_ok"] == 0.0


def test_rag_without_a_retriever_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="retriever"):
        run(tiny_tokenizer, ["x"], "rag")


def test_an_untagged_baseline_answer_is_scored_whole_and_marked_unformatted(tiny_tokenizer):
    record, _ = run(tiny_tokenizer, ["Mira Oltan"], "direct")
    assert (record["em"], record["format_ok"], record["answer"]) == (1.0, 0.0, "Mira Oltan")

"""The methods' logic with a scripted model (the controller, the prompts, the scoring) and a real bm25 server."""

import asyncio

import pytest

from autocoa_verl.agent.retriever_client import RetrieverClient
from autocoa_verl.eval.methods import Methods
from tests.agent.fakes import ScriptedServer

ROW = {"id": "q1", "question": "Who founded the Popol Guild?", "golden_answers": ["Mira Oltan"], "hops": 1,
       "needs_search": True}


def run(tokenizer, turns, method, url=None, exemplars=()):
    server = ScriptedServer(tokenizer, turns)

    async def go():
        retriever = RetrieverClient(url) if url else None
        try:
            return await Methods(server, tokenizer, retriever, rollout_factory=None, max_actions=2, topk=2,
                                 exemplars=exemplars).run(method, [ROW], sample=0)
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


def _train_rows(toy_world_dir):
    import json

    return [json.loads(line) for line in open(toy_world_dir / "train.jsonl")]


def test_fewshot_exemplars_come_from_the_training_split_and_parse(toy_world_dir):
    from autocoa_verl.eval.methods import REACT_ACTION, pick_exemplars, react_exemplar

    train = _train_rows(toy_world_dir)
    exemplars = pick_exemplars(train, 3)
    assert [len(r["chain"]) for r in exemplars] == [2, 1, 0]
    assert all(r["id"].startswith("toy-train-") for r in exemplars)
    for row in exemplars:
        text = react_exemplar(row, [f"Doc 1 (x): about {s['query']}" for s in row["chain"]])
        actions = REACT_ACTION.findall(text)  # the controller's own parser reads every exemplar action
        assert [a[0] for a in actions] == ["Search"] * len(row["chain"]) + ["Finish"]
        assert [a[1] for a in actions[:-1]] == [s["query"] for s in row["chain"]]
        assert actions[-1][1] == row["golden_answers"][0]
    with pytest.raises(ValueError, match="gold chains"):
        pick_exemplars([ROW], 1)


def test_react_fewshot_prompt_holds_the_exemplars_with_retrieved_observations(tiny_tokenizer, bm25_server,
                                                                               toy_world_dir):
    from autocoa_verl.eval.methods import pick_exemplars

    exemplars = pick_exemplars(_train_rows(toy_world_dir), 2)
    turns = [" I need the founder.\nAction 1: Search[Popol Guild founder]\nObservation 1: made up",
             " Found it.\nAction 2: Finish[Mira Oltan]"]
    record, server = run(tiny_tokenizer, turns, "react_fewshot", bm25_server.url, exemplars)
    assert (record["searches"], record["em"], record["format_ok"]) == (1, 1.0, 1.0)
    first, second = (tiny_tokenizer.decode(c["prompt_ids"]) for c in server.calls)
    for row in exemplars:
        assert f"Question: {row['question']}" in first and f"Finish[{row['golden_answers'][0]}]" in first
    assert first.count("Observation 1: Doc 1 (") == 2  # each exemplar's search shows the retriever's documents
    assert first.rstrip().endswith("Thought 1:") and "made up" not in second
    assert "Observation 1: Doc 1 (" in second.split("Question: Who founded the Popol Guild?")[-1]
    assert second.rstrip().endswith("Thought 2:")


def test_react_fewshot_without_exemplars_is_a_clear_error(tiny_tokenizer, bm25_server):
    with pytest.raises(ValueError, match="react_exemplars"):
        run(tiny_tokenizer, ["x"], "react_fewshot", bm25_server.url)

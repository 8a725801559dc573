"""Teacher-trajectory synthesis with a scripted teacher (the model is faked; loop, retriever and scorer are real)."""

import asyncio
import json

import pandas as pd

from autocoa_verl.agent.standalone import StandaloneRollout, compose_rl_config
from autocoa_verl.data.sft_files import read_sft_parquet
from autocoa_verl.data.synthesis import synthesize
from tests.agent.fakes import ScriptedServer


def _questions(toy_world_dir, answer, n):
    rows = [json.loads(line) for line in open(toy_world_dir / "train.jsonl")]
    right = [r for r in rows if r["golden_answers"][0] == answer]
    wrong = [r for r in rows if answer not in r["golden_answers"]]
    return right[:1] + wrong[: n - 1]


def _run(server, tokenizer, questions, out, bm25_server, **kwargs):
    config = compose_rl_config([f"coa.retriever.url={bm25_server.url}",
                                "actor_rollout_ref.rollout.response_length=256"])
    rollout = StandaloneRollout(config, server, tokenizer)
    return asyncio.run(synthesize(rollout, questions, out, progress=False, **kwargs))


def test_keeps_correct_trajectories_with_segments_from_the_mask(toy_world_dir, tiny_tokenizer, bm25_server, tmp_path):
    rows = [json.loads(line) for line in open(toy_world_dir / "train.jsonl")]
    answer = next(r for r in rows if r["needs_search"])["golden_answers"][0]
    questions = _questions(toy_world_dir, answer, 4)
    teacher = ScriptedServer(tiny_tokenizer, ["<think>look it up</think>\n<search> founder </search>",
                                              f"<think>got it</think><answer>{answer}</answer>"], per_sample=True)
    counts = _run(teacher, tiny_tokenizer, questions, tmp_path, bm25_server, coa_target=10, cot_target=10,
                  batch_size=2)
    assert counts == {"coa": 1, "cot": 0, "questions_done": 4, "samples_this_run": 4}  # one question had that answer
    [row] = read_sft_parquet(tmp_path / "trajectories.parquet", "trajectories")
    assert row["question_id"] == str(questions[0]["id"]) and row["kind"] == "coa"
    sources = [s["source"] for s in row["segments"]]
    assert sources == ["model", "env", "model"]
    assert row["segments"][0]["text"] == "<think>look it up</think>\n<search> founder </search>"
    assert row["segments"][1]["text"].startswith("\n<information>")
    assert row["segments"][2]["text"] == f"<think>got it</think><answer>{answer}</answer>"


def test_resumes_and_stops_at_the_targets(toy_world_dir, tiny_tokenizer, bm25_server, tmp_path):
    rows = [json.loads(line) for line in open(toy_world_dir / "train.jsonl")]
    answer = rows[0]["golden_answers"][0]
    questions = rows[:1] + [r for r in rows if answer not in r["golden_answers"]][:3]
    cot = lambda: ScriptedServer(tiny_tokenizer, [f"<think>I know</think><answer>{answer}</answer>"], per_sample=True)  # noqa: E731
    first = _run(cot(), tiny_tokenizer, questions[:2], tmp_path, bm25_server, coa_target=0, cot_target=5,
                 samples_per_question=2, batch_size=1)
    assert (first["cot"], first["questions_done"]) == (2, 2)  # both samples of the right question kept
    teacher = cot()
    again = _run(teacher, tiny_tokenizer, questions, tmp_path, bm25_server, coa_target=0, cot_target=5,
                 samples_per_question=2, batch_size=1)
    assert again["samples_this_run"] == 4 and again["questions_done"] == 4  # only the two new questions ran
    assert len(teacher.calls) == 4  # one single-turn generation per new sample, none for the done questions
    frame = pd.read_parquet(tmp_path / "trajectories.parquet")
    assert sorted(frame["id"]) == [f"{questions[0]['id']}-s0", f"{questions[0]['id']}-s1"]
    # targets met: a further run does no work at all
    done = _run(cot(), tiny_tokenizer, questions + rows[10:20], tmp_path, bm25_server, coa_target=0, cot_target=2)
    assert done["samples_this_run"] == 0


def _trajectory(question, preset_prefix="<think>hmm</think>\n"):
    from autocoa_verl.data.sft_files import trajectory_row
    from autocoa_verl.protocol import build_prompt

    segments = [{"source": "model", "text": f"{preset_prefix}<answer>x</answer>"}]
    return trajectory_row(f"{question['id']}-s0", build_prompt(question["question"]), segments,
                          question_id=str(question["id"]))


def test_pairs_branch_at_the_first_decision_and_prefer_the_branch_that_was_right(toy_world_dir, tiny_tokenizer,
                                                                              bm25_server, tmp_path):
    from autocoa_verl.data.synthesis import synthesize_pairs

    rows = [json.loads(line) for line in open(toy_world_dir / "train.jsonl")]
    question = next(r for r in rows if r["needs_search"])
    answer = question["golden_answers"][0]
    config = compose_rl_config([f"coa.retriever.url={bm25_server.url}",
                                "actor_rollout_ref.rollout.response_length=256"])

    # a teacher whose forced search is followed by the right answer: acting wins, answering at once is malformed
    acting = ScriptedServer(tiny_tokenizer, [" founder </search>", f"<think>ok</think><answer>{answer}</answer>"],
                            per_sample=True)
    counts = asyncio.run(synthesize_pairs(StandaloneRollout(config, acting, tiny_tokenizer), [_trajectory(question)],
                                          {str(question["id"]): question}, tmp_path / "a", progress=False))
    assert counts == {"pairs": 1, "acting_chosen": 1}
    [pair] = read_sft_parquet(tmp_path / "a" / "pairs.parquet", "pairs")
    assert pair["prefix"] == [{"source": "model", "text": "<think>hmm</think>\n"}]
    assert [s["source"] for s in pair["chosen"]] == ["model", "env", "model"]
    assert pair["chosen"][0]["text"] == "<search> founder </search>"  # forced tag + generated query: one action
    assert pair["rejected"][0]["text"].startswith("<answer> founder")
    # the forced text went into the prompt of both branches, after the chat template
    prompts = {tiny_tokenizer.decode(c["prompt_ids"]) for c in acting.calls[:2]}
    assert {p.endswith("<think>hmm</think>\n<search>") or p.endswith("<think>hmm</think>\n<answer>")
            for p in prompts} == {True}

    # a teacher that knows the answer: answering at once is right, the forced search goes nowhere
    knowing = ScriptedServer(tiny_tokenizer, [f"{answer}</answer>"], per_sample=True)
    counts = asyncio.run(synthesize_pairs(StandaloneRollout(config, knowing, tiny_tokenizer), [_trajectory(question)],
                                          {str(question["id"]): question}, tmp_path / "b", progress=False))
    assert counts == {"pairs": 1, "acting_chosen": 0}
    [pair] = read_sft_parquet(tmp_path / "b" / "pairs.parquet", "pairs")
    assert pair["chosen"] == [{"source": "model", "text": f"<answer>{answer}</answer>"}]

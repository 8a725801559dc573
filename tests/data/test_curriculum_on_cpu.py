"""The RL curriculum: which questions are kept, from hand-made pass rates and from a scripted policy."""

import asyncio
import itertools
from collections import Counter

import pytest
from verl.workers.rollout.replica import TokenOutput

from autocoa_verl.data.curriculum import (measure, pass_rates, select_by_pass_rate, stratified_order,
                                         zero_variance_share)


def test_keeps_only_questions_the_policy_sometimes_solves():
    rates = {"never": 0.0, "rare": 0.125, "half": 0.5, "often": 0.875, "always": 1.0}
    assert select_by_pass_rate(rates) == ["rare", "half", "often"]
    assert select_by_pass_rate(rates, low=0.2, high=0.9) == ["half", "often"]
    assert select_by_pass_rate({"a": 0.2}, low=0.2) == []  # the bounds are strict
    with pytest.raises(ValueError, match="low < high"):
        select_by_pass_rate(rates, low=0.5, high=0.5)


def test_zero_variance_share_counts_groups_with_equal_rewards():
    assert zero_variance_share([[0.0] * 4, [1.0] * 4]) == 1.0
    assert zero_variance_share([[0.0, 1.0, 0.0, 0.0], [1.0] * 4]) == 0.5
    with pytest.raises(ValueError):
        zero_variance_share([])


class AlternatingPolicy:
    """A fake model: per question, answers right on every other sample for 'mixed' questions, always for 'easy'
    ones, never for 'hard' ones."""

    def __init__(self, tokenizer, answers):
        self.tokenizer, self.answers, self.count = tokenizer, answers, itertools.count()

    def run(self, coroutine):
        return asyncio.run(coroutine)

    def good(self, kind: str, greedy: bool) -> bool:
        return kind == "easy" or (kind == "mixed" and next(self.count) % 2 == 0)

    async def generate(self, request_id, *, prompt_ids, sampling_params, **_):
        prompt = self.tokenizer.decode(prompt_ids)
        kind, right = next((k, a) for k, a in self.answers.items() if k in prompt)
        good = self.good(kind, sampling_params["temperature"] == 0.0)
        text = f"<answer>{right if good else 'Nobody'}</answer>"
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return TokenOutput(token_ids=ids, log_probs=None, stop_reason="completed")


def test_pass_rates_score_rollouts_with_the_training_reward(tiny_tokenizer):
    from autocoa_verl.agent.standalone import StandaloneRollout, compose_rl_config

    rows = [{"id": k, "question": f"Who is {k}?", "golden_answers": [a]}
            for k, a in {"easy": "Arlo", "mixed": "Mira", "hard": "Quessly"}.items()]
    policy = AlternatingPolicy(tiny_tokenizer, {r["id"]: r["golden_answers"][0] for r in rows})
    rollout = StandaloneRollout(compose_rl_config([]), policy, tokenizer=tiny_tokenizer, hf_model_type="qwen2")
    rates = pass_rates(rollout, rows, samples=4, sampling={"temperature": 1.0, "logprobs": False}, batch_size=5,
                       progress=False)
    assert {k: v["pass_rate"] for k, v in rates.items()} == {"easy": 1.0, "mixed": 0.5, "hard": 0.0}
    assert all(len(v["rewards"]) == 4 for v in rates.values())
    assert select_by_pass_rate({k: v["pass_rate"] for k, v in rates.items()}) == ["mixed"]


class GreedyAwarePolicy(AlternatingPolicy):
    """A fake model whose greedy answer differs from its samples: 'slip' is wrong greedily and right on every other
    sample, 'sharp' right greedily and on every other sample, 'easy' always right, 'hard' never; it counts its calls
    by (kind, greedy)."""

    def __init__(self, tokenizer, answers):
        super().__init__(tokenizer, answers)
        self.calls = Counter()

    def good(self, kind: str, greedy: bool) -> bool:
        self.calls[kind, greedy] += 1
        if kind in ("slip", "sharp"):
            return (kind == "sharp") if greedy else next(self.count) % 2 == 0
        return kind == "easy"


def test_greedy_wrong_samples_and_keeps_only_the_questions_the_greedy_answer_misses(tiny_tokenizer):
    from autocoa_verl.agent.standalone import StandaloneRollout, compose_rl_config

    answers = {"easy": "Arlo", "slip": "Mira", "sharp": "Tove", "hard": "Quessly"}
    rows = [{"id": k, "question": f"Who is {k}?", "golden_answers": [a]} for k, a in answers.items()]
    policy = GreedyAwarePolicy(tiny_tokenizer, answers)
    rollout = StandaloneRollout(compose_rl_config([]), policy, tokenizer=tiny_tokenizer, hf_model_type="qwen2")
    plain = measure(rollout, rows, samples=4, temperature=1.0, progress=False)
    assert select_by_pass_rate({k: v["pass_rate"] for k, v in plain.items()}) == ["slip", "sharp"]
    policy.calls.clear()
    rates = measure(rollout, rows, samples=4, temperature=1.0, greedy="wrong", progress=False)
    assert {k: v["greedy"] for k, v in rates.items()} == {"easy": 1.0, "slip": 0.0, "sharp": 1.0, "hard": 0.0}
    assert {k for k, v in rates.items() if "pass_rate" in v} == {"slip", "hard"}  # greedy-right: not sampled
    assert select_by_pass_rate({k: v["pass_rate"] for k, v in rates.items() if "pass_rate" in v}) == ["slip"]
    assert policy.calls == Counter({(k, True): 1 for k in answers} | {("slip", False): 4, ("hard", False): 4})
    balanced = measure(rollout, rows, samples=4, temperature=1.0, greedy="balanced", progress=False)
    assert {k: v["greedy"] for k, v in balanced.items()} == {k: v["greedy"] for k, v in rates.items()}
    assert select_by_pass_rate({k: v["pass_rate"] for k, v in balanced.items()}) == ["slip", "sharp"]  # all sampled
    with pytest.raises(ValueError, match="greedy must be one of"):
        measure(rollout, rows, samples=4, temperature=1.0, greedy="yes")


def test_stratified_order_gives_every_batch_each_hop_count_while_they_last():
    rows = [{"id": f"{hops}-{i}", "hops": hops} for hops, n in enumerate([26, 31, 40, 33]) for i in range(n)]
    order = stratified_order(rows, key=lambda row: row["hops"], seed=3)
    assert sorted(r["id"] for r in order) == sorted(r["id"] for r in rows)  # a permutation: nothing lost or doubled
    batches = [order[i : i + 4] for i in range(0, 26 * 4, 4)]
    assert all(sorted(r["hops"] for r in batch) == [0, 1, 2, 3] for batch in batches)
    assert Counter(r["hops"] for r in order[26 * 4 : 26 * 4 + 3]) == Counter({1: 1, 2: 1, 3: 1})
    assert order == stratified_order(rows, key=lambda row: row["hops"], seed=3)
    assert order != stratified_order(rows, key=lambda row: row["hops"], seed=4)


def test_greedy_balanced_writes_the_kept_questions_alternating_wrong_and_right(tmp_path, monkeypatch):
    import json

    import pyarrow.parquet as pq

    from autocoa_verl.data import curriculum

    questions = tmp_path / "train.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Q{i}?", "golden_answers": ["A"]}) + "\n"
                                 for i in range(7)))
    greedy = {"q0": 1.0, "q1": 1.0, "q2": 1.0, "q3": 0.0, "q4": 0.0, "q5": 1.0, "q6": 0.0}
    rate = {"q0": 0.5, "q1": 0.75, "q2": 0.25, "q3": 0.25, "q4": 0.5, "q5": 1.0, "q6": 0.0}  # q5, q6: not kept
    monkeypatch.setattr(curriculum, "_measure", lambda args, rows, index_dir: {
        k: {"greedy": greedy[k], "pass_rate": rate[k], "rewards": []} for k in greedy})
    out = tmp_path / "rl.parquet"
    curriculum.main(["--model", "m", "--questions", str(questions), "--corpus", "c", "--out", str(out),
                     "--greedy-balanced"])
    ids = [row["id"] for row in pq.read_table(out).column("extra_info").to_pylist()]
    assert sorted(ids) == ["q0", "q1", "q2", "q3", "q4"]
    # each pair of rows (one round of stratified_order) holds one of each kind while both last
    assert [sorted(greedy[i] for i in ids[k : k + 2]) for k in (0, 2)] == [[0.0, 1.0]] * 2 and greedy[ids[4]] == 1.0

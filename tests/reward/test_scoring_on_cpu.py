import pytest
from verl.utils.reward_score import search_r1_like_qa_em as verl_qa_em

from autocoa_verl.reward import compute_score, exact_match, normalize_answer, substring_exact_match, token_f1
from autocoa_verl.reward.scoring import as_answer_list, qa_scores


def test_normalize_answer_by_hand():
    assert normalize_answer("  The Quick, brown FOX!  ") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("U.S.A.") == "usa"


def test_exact_and_substring_match():
    assert exact_match("the Mira Oltan.", ["Mira Oltan"]) == 1.0
    assert exact_match("Mira", ["Mira Oltan"]) == 0.0
    assert exact_match(None, ["x"]) == 0.0
    assert exact_match("b", ["a", "B"]) == 1.0
    assert substring_exact_match("it was Mira Oltan who", ["Mira Oltan"]) == 1.0
    assert substring_exact_match("Mira", ["Mira Oltan"]) == 0.0


def test_token_f1_by_hand():
    # pred tokens [mira, oltan, of, quessly], gold [mira, oltan]: P = 2/4, R = 2/2, F1 = 2*0.5*1/1.5 = 2/3
    assert token_f1("Mira Oltan of Quessly", ["Mira Oltan"]) == pytest.approx(2 / 3)
    # best over golds: gold "quessly" gives P = 1/4, R = 1 -> 0.4; gold "mira oltan" gives 2/3
    assert token_f1("Mira Oltan of Quessly", ["Quessly", "Mira Oltan"]) == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: pred [x, x], gold [x]: overlap 1, P = 1/2, R = 1 -> 2/3
    assert token_f1("x x", ["x"]) == pytest.approx(2 / 3)
    # articles normalise away: both sides empty, no overlap
    assert token_f1("a", ["the"]) == 0.0
    assert token_f1("yes", ["no"]) == 0.0
    assert token_f1("yes it is", ["yes"]) == 0.0  # yes/no golds only match exactly
    assert token_f1(None, ["x"]) == 0.0


def test_gold_answer_shapes():
    assert as_answer_list("x") == ["x"]
    assert as_answer_list({"target": ("a", 1)}) == ["a", "1"]
    with pytest.raises(ValueError, match="'target'"):
        as_answer_list({"answers": ["a"]})
    with pytest.raises(ValueError, match="empty list"):
        as_answer_list([])


def test_qa_scores_full_response():
    response = (
        "<think>need it</think><search>Arlo Venn birthplace</search>"
        "<information>Doc 1: <answer>Wrong</answer></information><answer>Quessly</answer>"
    )
    scores = qa_scores(response, ["Quessly"])
    assert (scores["answer"], scores["em"], scores["f1"], scores["format_ok"]) == ("Quessly", 1.0, 1.0, 1.0)


def test_compute_score_metrics_and_penalty():
    gt = {"target": ["Mira Oltan"]}
    assert compute_score("toy", "<answer>Mira Oltan of Quessly</answer>", gt)["score"] == 0.0
    assert compute_score("toy", "<answer>Mira Oltan of Quessly</answer>", gt, metric="f1")["score"] == pytest.approx(
        2 / 3
    )
    assert compute_score("toy", "<answer>Mira Oltan of Quessly</answer>", gt, metric="subem")["score"] == 1.0
    bad_format = "<answer>Mira Oltan</answer> and more"
    result = compute_score("toy", bad_format, gt, format_penalty=0.5)
    assert (result["score"], result["em"], result["format_ok"]) == (0.5, 1.0, 0.0)
    assert compute_score("toy", "\\boxed{Mira Oltan}", gt, preset="autocoa")["score"] == 1.0
    with pytest.raises(ValueError, match="metric must be one of"):
        compute_score("toy", "x", gt, metric="bleu")


CASES = [
    ("<answer>Paris</answer>", ["Paris"]),
    ("<answer> the paris </answer>", ["Paris"]),
    ("<answer>Lyon</answer>", ["Paris"]),
    ("no tags at all", ["Paris"]),
    ("<answer>a</answer> then <answer>Paris</answer>", ["Paris", "City of Light"]),
    ("<think>x</think><answer>City of light!</answer>", ["Paris", "City of Light"]),
    ("<answer></answer>", ["Paris"]),
]


@pytest.mark.parametrize("response, golds", CASES)
def test_em_agrees_with_verl_search_r1_scorer(response, golds):
    ours = compute_score("nq", response, {"target": golds})["em"]
    theirs = verl_qa_em.compute_score(response, {"target": golds})
    assert ours == float(theirs)


def _group(hops, search_cost, cap=0.5):
    """One 2-hop question's group: (searches, answer) per sample, scored with the search cost."""
    s, gt = "<search>q</search>", {"target": ["Mira Oltan"]}
    samples = [(2, "Mira Oltan"), (4, "Mira Oltan"), (9, "Mira Oltan"), (0, "Arlo Venn"), (2, "Arlo Venn")]
    return [compute_score("toy", s * n + f"<answer>{a}</answer>", gt, {"hops": hops}, search_cost=search_cost,
                          search_cost_cap=cap) for n, a in samples]


def test_search_cost_never_lets_a_wrong_answer_outrank_a_correct_one():
    # a charge large enough that a plain per-search penalty would rank 9 searches + correct below 0 searches + wrong
    scores = [r["score"] for r in _group(hops=2, search_cost=1.0, cap=0.9)]
    assert scores[:3] == [1.0, pytest.approx(0.1), pytest.approx(0.1)] and scores[3:] == [0.0, 0.0]
    assert min(scores[:3]) > max(scores[3:])
    # below the cap the charge ranks correct answers by their extra searches
    scores = [r["score"] for r in _group(hops=2, search_cost=0.05)]
    assert scores == [1.0, pytest.approx(0.9), pytest.approx(0.65), 0.0, 0.0]
    assert [r["over_search"] for r in _group(hops=2, search_cost=0.0)] == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert [r["score"] for r in _group(hops=2, search_cost=0.0)] == [1.0, 1.0, 1.0, 0.0, 0.0]  # off by default


def test_search_cost_without_hops_charges_every_search_and_its_bad_settings_are_named():
    gt = {"target": ["Mira Oltan"]}
    assert compute_score("nq", "<search>q</search><answer>Mira Oltan</answer>", gt,
                         search_cost=0.1)["score"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="search_cost needs metric='em'"):
        compute_score("nq", "x", gt, metric="f1", search_cost=0.1)
    with pytest.raises(ValueError, match=r"search_cost_cap=1.0 in \[0, 1\)"):
        compute_score("nq", "x", gt, search_cost=0.1, search_cost_cap=1.0)
    with pytest.raises(ValueError, match="format_penalty=0.6 \\+ search_cost_cap=0.5 must stay below 1"):
        compute_score("nq", "x", gt, search_cost=0.1, format_penalty=0.6)

"""World-model fidelity: each metric on hand-built simulated/real pairs, and the loop's sampled checks."""

import json

import pytest

from autocoa_verl.agent import fidelity
from autocoa_verl.protocol import get_preset

SEARCH_R1 = get_preset("search_r1")


def test_each_metric_on_a_hand_built_pair():
    simulated = 'Doc 1 ("Arlo Venn"): Arlo Venn was born in Quessly.\nDoc 2 ("Venn Hall"): a hall.'
    real = 'Doc 1 ("Arlo Venn"): Arlo Venn was born in Dorrow.'
    # normalised tokens: simulated doc 1 arlo venn arlo venn was born in quessly doc 2 venn hall hall (15)
    #                    real      doc 1 arlo venn arlo venn was born in dorrow (10)
    # bag overlap 9 (doc 1 arlo venn arlo venn was born in): F1 = 2 * 9/15 * 9/10 / (9/15 + 9/10) = 0.72
    # LCS 9 as well (the same 9 in order): ROUGE-L = 0.72
    m = fidelity.compare(simulated, real, ["Dorrow"], frozenset({"Arlo Venn", "Quessly"}))
    assert m == {"fidelity_checked": 1.0, "fidelity_answer_bearing": 0.0, "fidelity_token_f1": pytest.approx(0.72),
                 "fidelity_rouge_l": pytest.approx(0.72), "fidelity_titles": 2.0,
                 "fidelity_hallucinated_titles": 1.0}
    assert fidelity.compare(simulated, real, ["Quessly"])["fidelity_answer_bearing"] == 1.0
    assert "fidelity_titles" not in fidelity.compare(simulated, real, ["Quessly"])  # no corpus: not measured


def test_rouge_l_follows_order_where_bag_f1_does_not():
    assert fidelity.token_f1("born Quessly in", "born in Quessly") == 1.0
    # LCS of (born quessly in) and (born in quessly) is 2: P = R = 2/3
    assert fidelity.rouge_l("born Quessly in", "born in Quessly") == pytest.approx(2 / 3)
    assert fidelity.rouge_l("alpha", "beta") == 0.0


def test_block_body_reads_a_rendered_and_a_cut_block():
    assert fidelity.block_body('\n<information>Doc 1 ("A"): x</information>\n', SEARCH_R1) == 'Doc 1 ("A"): x'
    cut = "\n<information>Doc 1: x y ...[truncated]</information>\n"
    assert fidelity.block_body(cut, SEARCH_R1) == "Doc 1: x y"


def test_hop_answers_follow_the_search_index_and_fall_back_to_the_final_answer():
    row = {"reward_model": {"ground_truth": {"target": ["Siki Basin"]}},
           "extra_info": {"chain_answers": ["Doune", "Siki Basin"]}}
    golden, extra = fidelity.gold_of_row(row)
    assert [fidelity.hop_answers(golden, extra, i) for i in range(3)] == [["Doune"], ["Siki Basin"], ["Siki Basin"]]
    assert fidelity.hop_answers(["X"], {"chain_answers": []}, 0) == ["X"]


def test_corpus_titles_and_a_bad_row_named(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "1", "contents": '"Quessly"\nA city.'}) + "\n" + '{"id": "2"}\n')
    with pytest.raises(ValueError, match=r"corpus.jsonl:2: not a corpus row"):
        fidelity.corpus_titles(str(corpus))
    corpus.write_text(json.dumps({"id": "1", "contents": '"Quessly"\nA city.'}) + "\n")
    assert fidelity.corpus_titles(str(corpus)) == frozenset({"Quessly"})


@pytest.mark.parametrize("coa, expected", [
    ({"schedule": {"kind": "ratio"}}, (0.1, 0.0)),
    ({"schedule": {"kind": "ratio"}, "retriever": {"costly": True}}, (0.0, 0.0)),
    ({"schedule": {"kind": "always_simulated"}}, (0.0, 0.0)),  # stage 1 runs without a retriever
    ({"schedule": {"kind": "fidelity"}}, (0.1, 0.25)),
    ({"schedule": {"kind": "ratio"}, "world_model": {"fidelity_sample": 0.5, "probe_sample": 1}}, (0.5, 1.0)),
])
def test_default_shares(coa, expected):
    assert fidelity.shares(coa) == expected


def test_a_share_out_of_range_is_named():
    with pytest.raises(ValueError, match=r"coa.world_model.probe_sample=2: must be in \[0, 1\]"):
        fidelity.shares({"schedule": {"kind": "ratio"}, "world_model": {"probe_sample": 2}})

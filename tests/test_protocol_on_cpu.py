import pytest

from autocoa_verl import protocol as P
from autocoa_verl.protocol import Action, extract_answer, format_violations, parse_action, render_observation


@pytest.mark.parametrize("preset", ["search_r1", "autocoa"])
def test_search_action_is_found_and_stripped(preset):
    p = P.get_preset(preset)
    text = f"<think>I need the birthplace.</think>{p.search_open}  Arlo Venn birthplace \n{p.search_close}"
    assert parse_action(text, preset) == Action("search", "Arlo Venn birthplace", end=len(text))


def test_answer_action_search_r1_and_boxed():
    assert parse_action("<think>x</think><answer> Mira Oltan </answer>").content == "Mira Oltan"
    action = parse_action("so the answer is \\boxed{\\text{Mira {Oltan}}} done", "autocoa")
    assert (action.kind, action.content) == ("answer", "\\text{Mira {Oltan}}")
    assert action.end == len("so the answer is \\boxed{\\text{Mira {Oltan}}}")


def test_no_action():
    assert parse_action("<think>just thinking</think>") == Action("none", end=len("<think>just thinking</think>"))


@pytest.mark.parametrize(
    "text, reason",
    [
        ("<search>Arlo Venn", P.UNCLOSED_TAG),
        ("<answer>Mira", P.UNCLOSED_TAG),
        ("<search>   \n </search>", P.EMPTY_QUERY),
        ("<answer> </answer>", P.EMPTY_ANSWER),
        ("<search>a <search>b</search>", P.NESTED_TAG),
        ("<search>a <answer>b</answer></search>", P.NESTED_TAG),
        ("<search>" + "q" * 513 + "</search>", P.QUERY_TOO_LONG),
        ("<think>x</think><information>Doc 1: forged</information>", P.FORGED_OBSERVATION),
    ],
)
def test_malformed_actions_have_a_reason(text, reason):
    action = parse_action(text)
    assert (action.kind, action.reason) == ("malformed", reason)


def test_boxed_unbalanced_is_unclosed():
    assert parse_action("\\boxed{a{b}", "autocoa").reason == P.UNCLOSED_TAG


def test_query_length_limit_is_configurable():
    assert parse_action("<search>" + "q" * 513 + "</search>", max_query_chars=600).kind == "search"


def test_forged_observation_end_points_at_the_forgery():
    text = "<think>x</think><information>fake</information><search>q</search>"
    assert parse_action(text).end == len("<think>x</think>")


def test_several_actions_first_wins_and_end_cuts_the_rest():
    text = "<search>first</search> then <search>second</search><answer>a</answer>"
    action = parse_action(text)
    assert (action.kind, action.content) == ("search", "first")
    assert text[action.end :] == " then <search>second</search><answer>a</answer>"


def test_stop_strings():
    assert P.get_preset("search_r1").stop_strings() == ["</search>", "<information>", "</answer>"]
    assert P.get_preset("autocoa").stop_strings() == ["</end_search>", "<search_result>"]


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown tag preset 'react'"):
        P.get_preset("react")


def test_extract_answer_ignores_observations_and_takes_last():
    text = (
        "<search>q</search><information>Doc 1: the <answer>Wrong</answer></information>"
        "<answer>first</answer> hmm <answer> Last </answer>"
    )
    assert extract_answer(text) == "Last"
    assert extract_answer("<search>q</search><information><answer>leaked</answer>") is None
    assert extract_answer("no answer here") is None
    assert extract_answer("<search_result>\\boxed{no}</search_result> \\boxed{yes}", "autocoa") == "yes"


def test_render_observation_titles_and_numbering():
    block = render_observation(['"Arlo Venn"\nArlo Venn was born in Quessly.', "untitled text"])
    assert block == (
        '\n<information>Doc 1 ("Arlo Venn"): Arlo Venn was born in Quessly.\nDoc 2: untitled text</information>\n'
    )
    assert render_observation([], "autocoa") == "\n<search_result>No results.</search_result>\n"


def test_render_observation_char_budget_truncates_with_marker():
    passages = ['"A"\n' + "x" * 500]
    block = render_observation(passages, max_chars=100)
    assert len(block) == 100
    assert block.endswith(P.TRUNCATION_MARKER + "</information>\n")


def test_render_observation_token_budget():
    def words(s):
        return len(s.split())

    block = render_observation(['"A"\n' + "word " * 200], max_tokens=20, count_tokens=words)
    assert words(block) <= 20
    assert block.rstrip().endswith("</information>")
    with pytest.raises(ValueError, match="needs count_tokens"):
        render_observation(["x"], max_tokens=5)
    with pytest.raises(ValueError, match="cannot hold the tags"):
        render_observation(["x" * 50], max_chars=10)


def test_format_violations():
    good = "<think>a</think><search>q</search>\n<information>d</information>\n<think>b</think><answer>x</answer>\n"
    assert format_violations(good) == []
    assert format_violations("<think>a</think>") == ["no_answer"]
    assert format_violations("<search>q</search><answer>x</answer>") == ["search_without_observation"]
    assert format_violations("<information>d</information><answer>x</answer>") == ["observation_without_search"]
    assert format_violations("<search>q</search><information>d") == ["unclosed_observation"]
    assert format_violations("<search></search><information>d</information><answer>x</answer>") == ["empty_query"]
    assert format_violations("<answer>x") == ["unclosed_tag"]
    assert format_violations("<begin_search>q</end_search><search_result>d</search_result>\\boxed{x}", "autocoa") == []


def test_count_searches_and_prompt():
    assert P.count_searches("<search>a</search><information>x</information><search></search><search>b</search>") == 2
    messages = P.build_prompt(" Who founded Quessly? ", "autocoa")
    assert messages[0]["role"] == "user"
    assert "<begin_search>" in messages[0]["content"]
    assert messages[0]["content"].endswith("Question: Who founded Quessly?")

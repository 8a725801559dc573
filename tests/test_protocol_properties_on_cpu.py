"""Property-based tests of the tag protocol's parsers: no string makes them raise, and an answer quoted inside an
observation block never becomes the final answer."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autocoa_verl import protocol as P
from autocoa_verl.protocol import extract_answer, parse_action, render_observation

PRESETS = sorted(P.PRESETS)
SECRET = "§SECRET§"


def protocol_text(preset: str, alphabet_exclude: str = "") -> st.SearchStrategy[str]:
    """Strings built from the preset's own tags and arbitrary text, so that the interesting cases (nested, unclosed,
    forged, several actions) come up far more often than in random text."""
    p = P.get_preset(preset)
    tags = [p.think_open, p.think_close, p.search_open, p.search_close, p.observation_open, p.observation_close,
            p.answer_open, p.answer_close, "{", "}", "\\boxed{", " ", "\n"]
    free = st.text(st.characters(exclude_characters=alphabet_exclude + "§"), max_size=12)
    return st.lists(st.one_of(st.sampled_from(tags), free), max_size=16).map("".join)


@pytest.mark.parametrize("preset", PRESETS)
@given(data=st.data())
def test_parse_action_total_and_consistent(preset, data):
    text = data.draw(protocol_text(preset))
    max_query_chars = data.draw(st.integers(1, 64))
    action = parse_action(text, preset, max_query_chars=max_query_chars)
    assert action.kind in ("search", "answer", "none", "malformed")
    assert 0 <= action.end <= len(text)
    p = P.get_preset(preset)
    if action.kind in ("search", "answer"):
        assert action.content and action.content == action.content.strip()
        assert not any(tag in action.content for tag in p.opening_tags)
        assert action.content in text[: action.end]
    if action.kind == "search":
        assert len(action.content) <= max_query_chars
    if action.kind == "none":
        assert not any(tag in text for tag in p.opening_tags)


@pytest.mark.parametrize("preset", PRESETS)
@given(data=st.data())
def test_answer_never_comes_from_inside_an_observation(preset, data):
    p = P.get_preset(preset)
    before, after = data.draw(protocol_text(preset)), data.draw(protocol_text(preset))
    inside = data.draw(protocol_text(preset, alphabet_exclude="")).replace(p.observation_close, "")
    quoted = f"{p.answer_open}{SECRET}{p.answer_close}"
    text = f"{before}{p.observation_open}{inside}{quoted}{inside}{p.observation_close}{after}"
    answer = extract_answer(text, preset)
    assert answer is None or SECRET not in answer
    # and the same holds for an observation the model never closed
    answer = extract_answer(f"{before}{p.observation_open}{inside}{quoted}", preset)
    assert answer is None or SECRET not in answer


@pytest.mark.parametrize("preset", PRESETS)
@given(data=st.data())
def test_render_observation_is_one_closed_block_within_budget(preset, data):
    """Any passages, even ones quoting protocol tags, make one block that fits the budget and carries no answer."""
    p = P.get_preset(preset)
    passages = data.draw(st.lists(protocol_text(preset), max_size=5))
    budget = data.draw(st.none() | st.integers(64, 400))  # below ~50 characters the tags alone do not fit
    block = render_observation(passages, preset, max_chars=budget)
    assert block.startswith(f"\n{p.observation_open}") and block.endswith(f"{p.observation_close}\n")
    assert budget is None or len(block) <= budget
    assert P.strip_observations(block, preset) == "\n\n"
    assert parse_action(block.strip(), preset).kind == "malformed"  # read by the loop as a forged observation
    assert extract_answer(block, preset) is None

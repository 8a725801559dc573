"""The tag protocol: which tags an agent model writes, how to read its next action, how to render an observation.

Everything here is a pure function of strings, shared by the agent loop, the reward, data synthesis and evaluation,
so that training and evaluation can never disagree on what the model said.

Two presets:
    ``search_r1`` (default): ``<think>``, ``<search>q</search>``, ``<information>..</information>``, ``<answer>a</answer>``
    ``autocoa`` (the AutoCoA paper): ``<begin_search>q</end_search>``, ``<search_result>..</search_result>``,
        final answer in ``\\boxed{a}``.

Defined behaviour of :func:`parse_action` on a segment of generated text (the first protocol tag decides):
    - no protocol tag at all                          -> ``none``
    - an action whose closing tag is missing          -> ``malformed`` / ``unclosed_tag``
    - an empty or whitespace-only query or answer     -> ``malformed`` / ``empty_query`` or ``empty_answer``
    - another protocol tag inside the action          -> ``malformed`` / ``nested_tag``
    - a query longer than ``max_query_chars``         -> ``malformed`` / ``query_too_long``
    - the model opens an observation tag itself       -> ``malformed`` / ``forged_observation``
    - several actions in one segment                  -> the first one; ``Action.end`` says where it ends so the
                                                         caller drops the rest
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

ActionKind = Literal["search", "answer", "none", "malformed"]

UNCLOSED_TAG = "unclosed_tag"
EMPTY_QUERY = "empty_query"
EMPTY_ANSWER = "empty_answer"
NESTED_TAG = "nested_tag"
QUERY_TOO_LONG = "query_too_long"
FORGED_OBSERVATION = "forged_observation"

TRUNCATION_MARKER = " ...[truncated]"
BOXED_OPEN = "\\boxed{"


@dataclass(frozen=True)
class TagPreset:
    """The strings of one tag protocol.

    ``answer_open``/``answer_close`` are ``\\boxed{``/``}`` for the boxed style; braces inside are balanced.
    """

    name: str
    think_open: str
    think_close: str
    search_open: str
    search_close: str
    observation_open: str
    observation_close: str
    answer_open: str
    answer_close: str

    @property
    def boxed_answer(self) -> bool:
        return self.answer_open == BOXED_OPEN

    @property
    def opening_tags(self) -> tuple[str, ...]:
        return (self.search_open, self.observation_open, self.answer_open)

    def stop_strings(self) -> list[str]:
        """Where generation must pause: after an action, after a tagged answer, or where the model starts to forge
        an observation (so that in real mode it can never write its own)."""
        stops = [self.search_close, self.observation_open]
        if not self.boxed_answer:
            stops.append(self.answer_close)
        return stops


PRESETS: dict[str, TagPreset] = {
    "search_r1": TagPreset(
        name="search_r1",
        think_open="<think>",
        think_close="</think>",
        search_open="<search>",
        search_close="</search>",
        observation_open="<information>",
        observation_close="</information>",
        answer_open="<answer>",
        answer_close="</answer>",
    ),
    "autocoa": TagPreset(
        name="autocoa",
        think_open="<think>",
        think_close="</think>",
        search_open="<begin_search>",
        search_close="</end_search>",
        observation_open="<search_result>",
        observation_close="</search_result>",
        answer_open=BOXED_OPEN,
        answer_close="}",
    ),
}
DEFAULT_PRESET = "search_r1"


def get_preset(preset: str | TagPreset = DEFAULT_PRESET) -> TagPreset:
    """Returns the preset named ``preset`` (a ``TagPreset`` passes through).

    >>> get_preset("autocoa").search_open
    '<begin_search>'
    """
    if isinstance(preset, TagPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown tag preset {preset!r}; choose one of {sorted(PRESETS)}") from None


@dataclass(frozen=True)
class Action:
    """The next action found in a segment of generated text.

    Attributes:
        kind: ``search``, ``answer``, ``none`` or ``malformed``.
        content: the stripped query (search) or answer text; empty otherwise.
        reason: why it is malformed (one of the module constants), empty otherwise.
        end: character offset just past the action's closing tag (``len(text)`` when there is none); text after it
            was generated past the action and must be dropped.
    """

    kind: ActionKind
    content: str = ""
    reason: str = ""
    end: int = 0


def _find_boxed_close(text: str, start: int) -> int:
    """Index of the brace closing a ``\\boxed{`` whose content starts at ``start``; -1 if unbalanced."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _first_tag(text: str, tags: Sequence[str], start: int = 0) -> tuple[int, str]:
    """Earliest position of any of ``tags`` in ``text`` at or after ``start``: (index, tag) or (-1, "")."""
    best = (-1, "")
    for tag in tags:
        i = text.find(tag, start)
        if i != -1 and (best[0] == -1 or i < best[0]):
            best = (i, tag)
    return best


def parse_action(text: str, preset: str | TagPreset = DEFAULT_PRESET, max_query_chars: int = 512) -> Action:
    """Finds the first action in ``text`` (see the module docstring for every case).

    >>> parse_action("<think>hm</think><search> Arlo Venn birthplace </search>")
    Action(kind='search', content='Arlo Venn birthplace', reason='', end=56)
    >>> parse_action("<search>Arlo").reason
    'unclosed_tag'
    """
    p = get_preset(preset)
    start, tag = _first_tag(text, p.opening_tags)
    if start == -1:
        return Action("none", end=len(text))
    if tag == p.observation_open:
        return Action("malformed", reason=FORGED_OBSERVATION, end=start)
    is_search = tag == p.search_open
    body_start = start + len(tag)
    close_tag = p.search_close if is_search else p.answer_close
    if not is_search and p.boxed_answer:
        close = _find_boxed_close(text, body_start)
    else:
        close = text.find(close_tag, body_start)
    if close == -1:
        return Action("malformed", reason=UNCLOSED_TAG, end=len(text))
    end = close + len(close_tag)
    body = text[body_start:close]
    if _first_tag(body, p.opening_tags)[0] != -1:
        return Action("malformed", reason=NESTED_TAG, end=end)
    content = body.strip()
    if not content:
        return Action("malformed", reason=EMPTY_QUERY if is_search else EMPTY_ANSWER, end=end)
    if is_search and len(content) > max_query_chars:
        return Action("malformed", reason=QUERY_TOO_LONG, end=end)
    return Action("search" if is_search else "answer", content=content, end=end)


def strip_observations(text: str, preset: str | TagPreset = DEFAULT_PRESET) -> str:
    """Removes every observation block (an unclosed one runs to the end of the text).

    >>> strip_observations("a<information>x <answer>y</answer></information>b")
    'ab'
    """
    p = get_preset(preset)
    out, pos = [], 0
    while True:
        i = text.find(p.observation_open, pos)
        if i == -1:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:i])
        j = text.find(p.observation_close, i + len(p.observation_open))
        if j == -1:
            return "".join(out)
        pos = j + len(p.observation_close)


def extract_answer(text: str, preset: str | TagPreset = DEFAULT_PRESET) -> str | None:
    """The final answer: the last complete answer outside observation blocks, stripped; ``None`` if there is none.

    Answers quoted inside an observation (a retrieved passage, a forged block) never count.

    >>> extract_answer("<answer>a</answer><information><answer>b</answer></information>")
    'a'
    >>> extract_answer("so \\\\boxed{x^{2}}", "autocoa")
    'x^{2}'
    """
    p = get_preset(preset)
    text = strip_observations(text, p)
    if p.boxed_answer:
        last = None
        pos = text.find(BOXED_OPEN)
        while pos != -1:
            close = _find_boxed_close(text, pos + len(BOXED_OPEN))
            if close == -1:
                break
            last = text[pos + len(BOXED_OPEN) : close]
            pos = text.find(BOXED_OPEN, close)
        return None if last is None else last.strip()
    pattern = re.escape(p.answer_open) + r"(.*?)" + re.escape(p.answer_close)
    matches = re.findall(pattern, text, flags=re.DOTALL)
    return matches[-1].strip() if matches else None


def passage_title_and_text(contents: str) -> tuple[str, str]:
    """Splits FlashRAG ``contents`` (``"Title"\\ntext``) into title and text; no title line gives an empty title.

    >>> passage_title_and_text('"Arlo Venn"\\nArlo Venn was born in Quessly.')
    ('Arlo Venn', 'Arlo Venn was born in Quessly.')
    """
    first, sep, rest = contents.partition("\n")
    if sep and len(first) >= 2 and first.startswith('"') and first.endswith('"'):
        return first[1:-1], rest.strip()
    return "", contents.strip()


def render_observation(
    passages: Sequence[str],
    preset: str | TagPreset = DEFAULT_PRESET,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> str:
    """Renders retrieved passages (FlashRAG ``contents`` strings) as one observation block.

    Observation tags quoted inside a passage are escaped (``<`` as ``&lt;``), so that retrieved text can never close
    the block and put words, an answer say, outside it. The block always ends with the closing tag; when it would
    exceed ``max_chars`` characters or ``max_tokens``
    tokens (counted with ``count_tokens``), the body is cut and ``TRUNCATION_MARKER`` is written before the tag.

    >>> render_observation(['"Quessly"\\nQuessly was founded by Mira Oltan.'])
    '\\n<information>Doc 1 ("Quessly"): Quessly was founded by Mira Oltan.</information>\\n'
    """
    p = get_preset(preset)
    if max_tokens is not None and count_tokens is None:
        raise ValueError("render_observation: max_tokens needs count_tokens")
    lines = []
    for i, contents in enumerate(passages, start=1):
        title, body = passage_title_and_text(contents)
        lines.append(f'Doc {i} ("{title}"): {body}' if title else f"Doc {i}: {body}")
    body = "\n".join(lines) if lines else "No results."
    for tag in (p.observation_open, p.observation_close):  # a passage quoting a tag must not end the block early
        body = body.replace(tag, tag.replace("<", "&lt;", 1))

    def wrap(b: str) -> str:
        return f"\n{p.observation_open}{b}{p.observation_close}\n"

    def fits(b: str) -> bool:
        block = wrap(b)
        if max_chars is not None and len(block) > max_chars:
            return False
        return max_tokens is None or count_tokens(block) <= max_tokens

    if fits(body):
        return wrap(body)
    lo, hi = 0, len(body)  # the longest prefix that fits with the marker, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(body[:mid] + TRUNCATION_MARKER):
            lo = mid
        else:
            hi = mid - 1
    if not fits(body[:lo] + TRUNCATION_MARKER):
        raise ValueError(f"observation budget (max_chars={max_chars}, max_tokens={max_tokens}) cannot hold the tags")
    return wrap(body[:lo] + TRUNCATION_MARKER)


def _skip_observation(text: str, pos: int, p: TagPreset) -> int | None:
    """Offset just past the observation block starting (after whitespace) at ``pos``; None if it is unclosed."""
    start = text.index(p.observation_open, pos)
    close = text.find(p.observation_close, start)
    return None if close == -1 else close + len(p.observation_close)


def format_violations(response: str, preset: str | TagPreset = DEFAULT_PRESET) -> list[str]:
    """Checks a whole response (model text with observation blocks) against the protocol.

    A valid response is a sequence of ``search -> observation`` steps followed by one answer, with nothing but
    whitespace after it. Returns the violations in order of appearance; empty means valid.

    >>> format_violations("<search>q</search><information>d</information><answer>a</answer>")
    []
    >>> format_violations("<answer>a</answer> more text <answer>b</answer>")
    ['text_after_answer']
    """
    p = get_preset(preset)
    problems: list[str] = []
    pos = 0
    while True:
        action = parse_action(response[pos:], p, max_query_chars=len(response) + 1)
        if action.kind == "answer":
            if response[pos + action.end :].strip():
                problems.append("text_after_answer")
            return problems
        if action.kind == "none":
            return problems + ["no_answer"]
        if action.reason == UNCLOSED_TAG:
            return problems + [UNCLOSED_TAG]
        if action.reason == FORGED_OBSERVATION:
            problems.append("observation_without_search")
        elif action.kind == "malformed":
            problems.append(action.reason)
        pos += action.end
        if response[pos:].lstrip().startswith(p.observation_open):
            after = _skip_observation(response, pos, p)
            if after is None:
                return problems + ["unclosed_observation"]
            pos = after
        elif action.kind == "search":
            problems.append("search_without_observation")


def count_searches(text: str, preset: str | TagPreset = DEFAULT_PRESET) -> int:
    """Number of well-formed search actions the model wrote (observation blocks are not read).

    >>> count_searches("<search>a</search><information><search>x</search></information><search>b</search>")
    2
    """
    p = get_preset(preset)
    text, pos, count = strip_observations(text, p), 0, 0
    while True:
        action = parse_action(text[pos:], p)
        if action.kind == "none":
            return count
        count += action.kind == "search"
        pos += action.end


_INSTRUCTIONS = {
    "search_r1": (
        "Answer the given question. Reason inside <think> and </think> first. If you lack some knowledge, search "
        "for it by writing <search> query </search>; the results come back between <information> and "
        "</information>. Search as many times as you need. When you know the answer, write it inside <answer> and "
        "</answer> without further explanation, e.g. <answer> Beijing </answer>."
    ),
    "autocoa": (
        "Answer the given question. Think step by step inside <think> and </think>. If you lack some knowledge, "
        "search for it by writing <begin_search> query </end_search>; the results come back between "
        "<search_result> and </search_result>. Search as many times as you need. Give the final answer as "
        "\\boxed{answer}."
    ),
}


def preset_of_prompt(content: str) -> str | None:
    """The preset whose instruction opens a user prompt built by :func:`build_prompt` (None: no known one).

    >>> preset_of_prompt(build_prompt("Who founded Quessly?", "autocoa")[0]["content"])
    'autocoa'
    """
    return next((name for name, text in _INSTRUCTIONS.items() if content.startswith(text)), None)


def build_prompt(question: str, preset: str | TagPreset = DEFAULT_PRESET) -> list[dict[str, str]]:
    """The chat messages that ask ``question`` under ``preset``'s protocol (one user turn).

    >>> build_prompt("Who founded Quessly?")[0]["content"].endswith("Question: Who founded Quessly?")
    True
    """
    p = get_preset(preset)
    if p.name not in _INSTRUCTIONS:
        raise ValueError(f"no instruction written for preset {p.name!r}")
    return [{"role": "user", "content": f"{_INSTRUCTIONS[p.name]}\nQuestion: {question.strip()}"}]

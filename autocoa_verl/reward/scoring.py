"""QA scoring shared by RL reward and evaluation: normalisation, exact match, substring EM, token F1, format.

Pure functions of strings. Normalisation is SQuAD's (lower-case, drop punctuation and English articles, squeeze
whitespace), which is also what Search-R1 and verl's ``search_r1_like_qa_em`` use, so EM agrees with theirs.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any, Mapping

from autocoa_verl.protocol import DEFAULT_PRESET, TagPreset, extract_answer, format_violations

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation.

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def as_answer_list(golden: Any) -> list[str]:
    """Accepts the shapes gold answers come in: a string, a list/array of strings, or verl/Search-R1's
    ``{"target": [...]}``.

    >>> as_answer_list({"target": ["Paris", "paris city"]})
    ['Paris', 'paris city']
    """
    if isinstance(golden, Mapping):
        if "target" not in golden:
            raise ValueError(f"gold answer mapping needs a 'target' key, got keys {sorted(golden)}")
        golden = golden["target"]
    if isinstance(golden, str):
        return [golden]
    answers = [str(g) for g in golden]
    if not answers:
        raise ValueError("empty list of gold answers")
    return answers


def exact_match(prediction: str | None, golden: Any) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer.

    >>> exact_match("the Paris", ["paris"])
    1.0
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in as_answer_list(golden)))


def substring_exact_match(prediction: str | None, golden: Any) -> float:
    """1.0 if any normalised gold answer occurs in the normalised prediction.

    >>> substring_exact_match("It is Paris, France", ["paris"])
    1.0
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(g) in pred for g in as_answer_list(golden)))


def bag_of_tokens_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str | None, golden: Any) -> float:
    """SQuAD token F1, the best over the gold answers. Yes/no/no-answer golds only match exactly (as in HotpotQA).

    >>> round(token_f1("Mira Oltan of Quessly", ["Mira Oltan"]), 4)
    0.6667
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    best = 0.0
    for gold in as_answer_list(golden):
        gold = normalize_answer(gold)
        if gold in ("yes", "no", "noanswer") or pred in ("yes", "no", "noanswer"):
            best = max(best, float(pred == gold))
        else:
            best = max(best, bag_of_tokens_f1(pred.split(), gold.split()))
    return best


def qa_scores(response: str, golden: Any, preset: str | TagPreset = DEFAULT_PRESET) -> dict[str, Any]:
    """All metrics of one response: the extracted answer, EM, substring EM, F1 and format validity.

    >>> s = qa_scores("<think>x</think><answer>Mira Oltan</answer>", ["Mira Oltan"])
    >>> (s["answer"], s["em"], s["f1"], s["format_ok"])
    ('Mira Oltan', 1.0, 1.0, 1.0)
    """
    answer = extract_answer(response, preset)
    violations = format_violations(response, preset)
    return {
        "answer": answer,
        "em": exact_match(answer, golden),
        "subem": substring_exact_match(answer, golden),
        "f1": token_f1(answer, golden),
        "format_ok": float(not violations),
        "format_violations": violations,
    }

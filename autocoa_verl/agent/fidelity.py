"""How good the world model's observations are: a simulated block against the real one for the same query.

Pure functions of strings. The agent loop calls :func:`compare` for a sampled share of its observations: on a
simulated step (``coa.world_model.fidelity_sample``) it also fetches the real block for the query, on a real step
(``coa.world_model.probe_sample``) it also lets the policy write the simulated one (a probe, never appended). Both blocks are read the same way: the
text between the observation tags, without the truncation marker.

- ``answer_bearing``: the simulated block holds the gold answer of the hop being searched (SQuAD-normalised,
  whole words), which is what a simulated observation must carry for a rollout on it to be able to succeed.
- ``token_f1`` and ``rouge_l``: bag-of-tokens F1 and longest-common-subsequence F between the two bodies'
  normalised tokens.
- hallucinated titles: of the passage titles the simulated block writes (``Doc N ("Title")``), those the corpus
  does not have.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from autocoa_verl.protocol import TRUNCATION_MARKER, TagPreset, passage_title_and_text
from autocoa_verl.reward.scoring import as_answer_list, bag_of_tokens_f1, normalize_answer

_TITLE = re.compile(r'Doc \d+ \("([^"\n]*)"\)')


def block_body(block: str, preset: TagPreset) -> str:
    """The text inside an observation block, without its tags and the truncation marker.

    >>> from autocoa_verl.protocol import get_preset
    >>> block_body('\\n<information>Doc 1 ("A"): a b ...[truncated]</information>\\n', get_preset("search_r1"))
    'Doc 1 ("A"): a b'
    """
    start = block.find(preset.observation_open)
    body = block[start + len(preset.observation_open):] if start != -1 else block
    end = body.find(preset.observation_close)
    body = body[:end] if end != -1 else body
    return body.replace(TRUNCATION_MARKER, "").strip()


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 (beta 1) over SQuAD-normalised tokens.

    >>> rouge_l("Mira was born in Quessly", "Mira Oltan was born in Quessly")
    0.9090909090909091
    >>> rouge_l("", "anything")
    0.0
    """
    a, b = normalize_answer(candidate).split(), normalize_answer(reference).split()
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for token in a:
        row = [0]
        for j, other in enumerate(b, start=1):
            row.append(previous[j - 1] + 1 if token == other else max(previous[j], row[j - 1]))
        previous = row
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def token_f1(candidate: str, reference: str) -> float:
    """Bag-of-tokens F1 over SQuAD-normalised tokens (the QA scorer's F1).

    >>> token_f1("born in Quessly", "Quessly")
    0.5
    """
    return bag_of_tokens_f1(normalize_answer(candidate).split(), normalize_answer(reference).split())


def answer_bearing(body: str, answers: Iterable[str]) -> bool:
    """Whether ``body`` holds one of ``answers`` as whole normalised words.

    >>> answer_bearing('Doc 1 ("Mira Oltan"): born in the city of Quessly.', ["Quessly"])
    True
    >>> answer_bearing("Quesslyan customs", ["Quessly"])
    False
    """
    text = f" {normalize_answer(body)} "
    return any(f" {normalize_answer(a)} " in text for a in answers if normalize_answer(a))


def titles(body: str) -> list[str]:
    """The passage titles a block writes, in order.

    >>> titles('Doc 1 ("Quessly"): a city.\\nDoc 2 ("Mira Oltan"): a person.\\nDoc 3: untitled.')
    ['Quessly', 'Mira Oltan']
    """
    return _TITLE.findall(body)


@lru_cache(maxsize=4)
def corpus_titles(corpus_path: str) -> frozenset[str]:
    """Every title in a FlashRAG corpus JSONL (``contents`` = ``"Title"\\ntext``), read once per process."""
    if not os.path.exists(corpus_path):
        raise FileNotFoundError(f"coa.world_model.fidelity_corpus: {corpus_path} does not exist")
    found = set()
    with open(corpus_path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            try:
                found.add(passage_title_and_text(json.loads(line)["contents"])[0])
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{corpus_path}:{n}: not a corpus row with 'contents' ({error})") from None
    return frozenset(found)


def gold_of_row(row: Mapping[str, Any]) -> tuple[list[str], dict]:
    """``(final gold answers, extra_info)`` of a verl RL row (``reward_model.ground_truth``), empty when absent.

    >>> gold_of_row({"reward_model": {"ground_truth": {"target": ["Paris"]}}, "extra_info": {"hops": 1}})
    (['Paris'], {'hops': 1})
    """
    truth = (row.get("reward_model") or {}).get("ground_truth")
    return (as_answer_list(truth) if truth is not None else []), dict(row.get("extra_info") or {})


def hop_answers(golden: Sequence[str], extra_info: Mapping[str, Any] | None, search_index: int) -> list[str]:
    """The gold answer of the hop a search looks for: the ``search_index``-th (from 0) of the row's chain answers
    (``extra_info.chain_answers``, the last one for later searches), else the question's final gold answers.

    >>> hop_answers(["Siki Basin"], {"chain_answers": ["Doune", "Siki Basin"]}, 0)
    ['Doune']
    >>> hop_answers(["Siki Basin"], {"chain_answers": ["Doune", "Siki Basin"]}, 5)
    ['Siki Basin']
    >>> import numpy as np
    >>> hop_answers(["Siki Basin"], {"chain_answers": np.array(["Doune", "Siki Basin"], dtype=object)}, 0)
    ['Doune']
    >>> hop_answers(["Paris"], None, 0)
    ['Paris']
    """
    chain = (extra_info or {}).get("chain_answers")
    chain = [] if chain is None else list(chain)  # a list, or a numpy array where the row was read from parquet
    if chain:
        return [str(chain[min(search_index, len(chain) - 1)])]
    return [str(a) for a in golden]


def compare(simulated: str, real: str, answers: Sequence[str], known_titles: frozenset[str] | None = None
            ) -> dict[str, float]:
    """Fidelity of one simulated body against the real body for the same query, as counts that add up over
    observations (``fidelity_checked`` is 1; divide the others by its total for means).

    >>> m = compare('Doc 1 ("Mira Oltan"): born in Quessly.', 'Doc 1 ("Mira Oltan"): Mira Oltan was born in Quessly.',
    ...             ["Quessly"], frozenset({"Mira Oltan"}))
    >>> m["fidelity_answer_bearing"], m["fidelity_titles"], m["fidelity_hallucinated_titles"]
    (1.0, 1.0, 0.0)
    """
    out = {"fidelity_checked": 1.0, "fidelity_answer_bearing": float(answer_bearing(simulated, answers)),
           "fidelity_token_f1": token_f1(simulated, real), "fidelity_rouge_l": rouge_l(simulated, real)}
    if known_titles is not None:
        written = titles(simulated)
        out["fidelity_titles"] = float(len(written))
        out["fidelity_hallucinated_titles"] = float(sum(title not in known_titles for title in written))
    return out


def shares(coa: Mapping[str, Any]) -> tuple[float, float]:
    """``(fidelity_sample, probe_sample)`` from the RL config's ``coa:``: the share of simulated observations whose
    real one is also fetched, and of real observations the world model also writes. Null picks the default:
    simulated ones 0.1, but 0 when ``coa.retriever.costly`` or when the schedule never goes real
    (``always_simulated``, which runs without a retriever); probes 0.25 under ``schedule.kind=fidelity``, which
    decides from them, else 0.

    >>> shares({"schedule": {"kind": "ratio"}, "world_model": {}, "retriever": {}})
    (0.1, 0.0)
    >>> shares({"schedule": {"kind": "fidelity"}, "world_model": {}, "retriever": {"costly": True}})
    (0.0, 0.25)
    """
    world_model, kind = coa.get("world_model") or {}, (coa.get("schedule") or {}).get("kind")
    simulated, probe = world_model.get("fidelity_sample"), world_model.get("probe_sample")
    if simulated is None:
        simulated = 0.0 if (coa.get("retriever") or {}).get("costly", False) or kind == "always_simulated" else 0.1
    if probe is None:
        probe = 0.25 if kind == "fidelity" else 0.0
    for name, value in (("fidelity_sample", simulated), ("probe_sample", probe)):
        if not 0 <= float(value) <= 1:
            raise ValueError(f"coa.world_model.{name}={value}: must be in [0, 1]")
    return float(simulated), float(probe)

"""Observation providers: what fills the observation block after a search action.

``RetrieverObserver`` asks the retriever server (real observations); ``WorldModelObserver`` lets the policy's own
server write the block (AutoCoA's internal world model, simulated observations). Both return token ids that the agent
loop appends with response mask 0; neither ever raises for an environment failure: it is reported on the
``Observation``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass
from typing import Any

from autocoa_verl.agent.retriever_client import RetrieverClient, RetrieverError
from autocoa_verl.agent.schedule import Source
from autocoa_verl.protocol import TRUNCATION_MARKER, TagPreset, render_observation


@dataclass
class Observation:
    """One observation block as tokens.

    Attributes:
        token_ids: the whole block, tags included (empty when ``error`` is set).
        source: ``real`` or ``simulated``.
        latency_s: wall time spent getting it.
        truncated: the body was cut to fit the token budget (a ``TRUNCATION_MARKER`` was written).
        error: the retriever failure kind (``timeout``, ``connection``, ...); empty on success.
        message: the failure's message.
    """

    token_ids: list[int]
    source: Source
    latency_s: float
    truncated: bool = False
    error: str = ""
    message: str = ""


class ObservationBudgetError(ValueError):
    """The token budget left for an observation cannot even hold its tags."""


def tokens_through(tokenizer, token_ids: list[int], n_chars: int) -> int:
    """The fewest leading tokens whose decoded text covers the first ``n_chars`` characters (all if none does).

    Used to drop tokens generated past an action's closing tag without ever splitting a token.
    """
    if len(tokenizer.decode(token_ids[:-1])) < n_chars:
        return len(token_ids)  # the common case: the text ends at (or inside the last token of) the tag
    lo, hi = 1, len(token_ids) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(token_ids[:mid])) >= n_chars:
            hi = mid
        else:
            lo = mid + 1
    return lo


def retrieved_block(passages: list[str], tokenizer, preset: TagPreset, max_tokens: int) -> tuple[str, bool]:
    """The observation block for retrieved passages (FlashRAG ``contents``, in the retriever's order) under a token
    budget, and whether it was cut. The one rendering of real observations: the loop appends exactly this text's
    tokens, and the oracle teacher writes exactly this text (so SFT sees what rollouts will see).

    Raises:
        ObservationBudgetError: ``max_tokens`` cannot even hold the tags.
    """
    count = lambda text: len(tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    try:
        text = render_observation(passages, preset, max_tokens=max_tokens, count_tokens=count)
    except ValueError as error:
        raise ObservationBudgetError(str(error)) from None
    return text, text != render_observation(passages, preset)


class RetrieverObserver:
    """Real observations: the top-k passages from the retriever server, rendered by the protocol."""

    source: Source = "real"

    def __init__(self, client: RetrieverClient, tokenizer, preset: TagPreset):
        self.client, self.tokenizer, self.preset = client, tokenizer, preset

    async def observe(self, query: str, context_ids: list[int], max_tokens: int, request_id: str,
                      sampling_params: dict[str, Any]) -> Observation:
        start = time.perf_counter()
        try:
            hits = (await self.client.search([query]))[0]
        except RetrieverError as error:
            return Observation([], "real", time.perf_counter() - start, error=error.kind, message=str(error))
        text, truncated = retrieved_block([hit.contents for hit in hits], self.tokenizer, self.preset, max_tokens)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return Observation(ids, "real", time.perf_counter() - start, truncated=truncated)


class WorldModelObserver:
    """Simulated observations: the policy server continues the trajectory after the opening observation tag and
    stops at the closing tag; a block cut by the token budget gets the truncation marker and the closing tag.

    Args:
        server_manager: the same server the policy generates with (verl's ``LLMServerClient`` or the standalone one).
        tokenizer: the policy's tokenizer.
        preset: the tag protocol.
        temperature: sampling temperature for the block; None keeps the rollout's.
    """

    source: Source = "simulated"

    def __init__(self, server_manager, tokenizer, preset: TagPreset, temperature: float | None = None):
        self.server_manager, self.tokenizer, self.preset = server_manager, tokenizer, preset
        self.temperature = temperature
        encode = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
        self.open_ids = encode("\n" + preset.observation_open)
        self.close_ids = encode(preset.observation_close + "\n")
        self.marker_ids = encode(TRUNCATION_MARKER)
        self.newline_ids = encode("\n")
        self.min_tokens = len(self.open_ids) + len(self.marker_ids) + len(self.close_ids) + 1

    async def observe(self, query: str, context_ids: list[int], max_tokens: int, request_id: str,
                      sampling_params: dict[str, Any]) -> Observation:
        start = time.perf_counter()
        if max_tokens < self.min_tokens:
            raise ObservationBudgetError(f"world-model observation budget {max_tokens} < {self.min_tokens} tokens")
        params = {key: value for key, value in sampling_params.items() if key != "logprobs"}
        params.update(stop=[self.preset.observation_close],
                      max_tokens=max_tokens - len(self.open_ids) - len(self.marker_ids) - len(self.close_ids))
        if self.temperature is not None:
            params["temperature"] = self.temperature
        output = await self.server_manager.generate(request_id=request_id, prompt_ids=context_ids + self.open_ids,
                                                    sampling_params=params)
        body = [t for t in output.token_ids if t != self.tokenizer.eos_token_id]
        text = self.tokenizer.decode(body)
        close = text.find(self.preset.observation_close)
        if close != -1:
            body = body[: tokens_through(self.tokenizer, body, close + len(self.preset.observation_close))]
            ids, truncated = self.open_ids + body + self.newline_ids, False
        else:
            truncated = len(output.token_ids) >= params["max_tokens"]
            ids = self.open_ids + body + (self.marker_ids if truncated else []) + self.close_ids
        return Observation(ids, "simulated", time.perf_counter() - start, truncated=truncated)


_CLIENTS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, RetrieverClient]]" = \
    weakref.WeakKeyDictionary()


def shared_retriever_client(url: str, **options: Any) -> RetrieverClient:
    """One client per (options, event loop) in this process, so that every sample of a rollout worker shares its
    connection pool and request coalescing (verl builds a new agent loop object per sample)."""
    clients = _CLIENTS.setdefault(asyncio.get_running_loop(), {})  # keyed by the loop itself: ids get reused
    key = (url, tuple(sorted(options.items())))
    if key not in clients:
        clients[key] = RetrieverClient(url, **options)
    return clients[key]


async def close_shared_clients() -> None:
    """Closes the running loop's shared clients (their connection pools); call it before the loop ends."""
    for client in _CLIENTS.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()

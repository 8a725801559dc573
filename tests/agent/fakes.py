"""A scripted fake of verl's server manager: the *model* is faked, the loop under test is real."""

from __future__ import annotations

from verl.workers.rollout.replica import TokenOutput


class ScriptedServer:
    """Each ``generate`` call returns the next scripted text as tokens.

    Like vLLM, a stop string ends the output with the token that completes it (``honour_stops=False`` plays an engine
    that ignores them) and ``max_tokens`` caps it. Log-probs are unique per token (-0.001, -0.002, ...) so a test can
    check they stay aligned with their tokens. With ``per_sample=True`` every request id (one per sample) plays the
    script from its start, so concurrent samples do not take each other's turns.
    """

    def __init__(self, tokenizer, turns: list[str], honour_stops: bool = True, per_sample: bool = False):
        self.tokenizer, self.turns, self.honour_stops = tokenizer, list(turns), honour_stops
        self.per_sample, self._played = per_sample, {}
        self.calls: list[dict] = []
        self.emitted: list[tuple[list[int], list[float]]] = []
        self._next_logprob = 1

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        self.calls.append({"request_id": request_id, "prompt_ids": list(prompt_ids), **sampling_params})
        if self.per_sample:
            turn = self._played.get(request_id, 0)
            self._played[request_id] = turn + 1
            text = self.turns[turn]
        elif not self.turns:
            raise AssertionError("the loop asked for more generations than scripted")
        else:
            text = self.turns.pop(0)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if self.honour_stops:
            for k in range(1, len(ids) + 1):
                if any(stop in self.tokenizer.decode(ids[:k]) for stop in sampling_params.get("stop", [])):
                    ids = ids[:k]
                    break
        ids = ids[: sampling_params.get("max_tokens", len(ids))]
        logprobs = [-(self._next_logprob + i) / 1000 for i in range(len(ids))]
        self._next_logprob += len(ids)
        self.emitted.append((ids, logprobs))
        return TokenOutput(token_ids=ids, log_probs=logprobs if sampling_params.get("logprobs") else None,
                           stop_reason="completed")

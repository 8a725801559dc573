"""The rollout benchmark's trace summary: turns per sample, prefix-cache use, the engine's idle time."""

from benchmarks.rollout_bench import markdown, trace_summary


def _call(sample, prompt, cached, generated, start, end):
    return {"request_id": sample, "prompt_tokens": prompt, "cached_tokens": cached, "generated_tokens": generated,
            "start": start, "end": end}


def test_turns_by_sample_and_overlapping_calls():
    trace = [_call("a", 100, 0, 20, 0.0, 2.0), _call("b", 100, 96, 30, 0.5, 3.0),
             _call("a", 150, 112, 10, 4.0, 5.0),  # a's observation: 150 - (100 + 20) = 30 new tokens
             _call("b", 170, 128, 5, 4.5, 6.0)]   # b's: 170 - 130 = 40
    summary = trace_summary(trace, wall_s=8.0)
    first, second = summary["turns"]
    assert first == {"turn": 1, "calls": 2, "prompt_tokens": 100.0, "cached_tokens": 48.0, "reprefilled_tokens": 52.0,
                     "new_tokens": 100.0, "cached_share": 0.48}
    assert second["new_tokens"] == 35.0 and second["reprefilled_tokens"] == 40.0
    # busy: [0, 3] and [4, 6]; idle 3 s of 8
    assert (summary["engine_busy_s"], summary["engine_idle_s"], summary["engine_idle_share"]) == (5.0, 3.0, 0.375)


def test_an_empty_run():
    assert trace_summary([], wall_s=0.0) == {"turns": [], "engine_busy_s": 0.0, "engine_idle_s": 0.0,
                                             "engine_idle_share": 0.0}


def test_the_report_names_both_single_turn_baselines_and_their_ratios():
    run = {"samples": 2, "wall_s": 4.0, "generated_tokens": 400, "generated_tokens_per_s": 100.0,
           "searches_per_sample": 1.5, "tokens_past_action": 0, "env_latency_s_per_observation": 0.01,
           "observation_tokens_per_observation": 120.0, "turns": [], "engine_idle_s": 0.0, "engine_idle_share": 0.0}
    engine = {"real": run, "simulated": run, "multi_vs_single_throughput": 0.5, "multi_vs_same_prefill_throughput": 0.8,
              "single_turn": {"wall_s": 2.0, "generated_tokens": 400, "generated_tokens_per_s": 200.0},
              "single_turn_same_prefill": {"wall_s": 2.5, "generated_tokens": 400, "generated_tokens_per_s": 125.0,
                                           "prefilled_observation_tokens": 360}}
    text = markdown({"machine": "x", "bookkeeping": {"turns": 8, "samples": 2, "us_per_turn": 300.0}, "engine": engine,
                     "model": "m", "response_length": 512})
    assert "| single-turn, same token counts | 2.0 | 400 | 200.0 | - | - |" in text
    assert "the 360 observation tokens prefilled in the prompt | 2.5 | 400 | 125.0 |" in text
    assert "single-turn throughput (real observations): **0.50**" in text
    assert "prefilled (the loop's own cost): **0.80**" in text

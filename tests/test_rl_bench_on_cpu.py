"""The RL benchmark's step summary and its before/after comparison report (no training: verl's metrics are faked)."""

from benchmarks.rl_bench import BEFORE, GENERATION, compare_markdown, summarize_steps

from autocoa_verl.config import compose


def metrics(step_s: float, gen_s: float, response_length: float, old_log_prob_s: float | None = None) -> dict:
    m = {"timing_s/step": step_s, "timing_s/gen": gen_s, "timing_s/update_actor": step_s - gen_s - 1.0,
         "timing_s/ref": 1.0, "response_length/mean": response_length, "critic/score/mean": 0.5,
         "timing_s/coa/searches/mean": 1.0, "timing_s/coa/obs_real/total": 4.0}
    return m | ({"timing_s/old_log_prob": old_log_prob_s} if old_log_prob_s is not None else {})


def test_summarize_steps_counts_the_trainer_side_per_response_token():
    summary = summarize_steps({1: metrics(30.0, 10.0, 200.0), 2: metrics(50.0, 20.0, 300.0)}, sequences=8)
    assert summary["response_tokens_per_step"] == 2000.0  # (200 + 300) / 2 x 8 sequences
    assert summary["trainer_s_per_1k_response_tokens"] == 12.5  # (20 + 30) / 2 s over 2000 tokens
    assert summary["breakdown_s"][GENERATION] == 15.0 and summary["breakdown_s"]["reference log-probs"] == 1.0
    assert "old log-probs" not in summary["breakdown_s"]  # bypass mode logs no old-log-prob pass


def test_compare_report_shows_both_runs_and_the_ratios():
    runs = {"before": {"overrides": BEFORE, **summarize_steps({1: metrics(40.0, 10.0, 200.0, 5.0)}, 8)},
            "after": {"overrides": [], **summarize_steps({1: metrics(30.0, 10.0, 200.0)}, 8)}}
    report = {"runs": runs, "setup": "CPU", "commit": "abc", "command": "python x", "step_time_ratio": 0.75,
              "trainer_side_ratio": 0.667, "trainer_per_token_ratio": 0.667, "kl_on_cpu": True}
    text = compare_markdown(report)
    assert "| old log-probs | 5.00 | 0.00 |" in text and "| whole step | 40.00 | 30.00 |" in text
    assert "| trainer side (step less generation), s per 1k response tokens | 18.75 | 12.50 |" in text
    assert "**0.750** (target <= 0.75)" in text and "bypass_mode=false" in text


def step_cost_settings(config) -> tuple:
    a = config.actor_rollout_ref
    env = config.ray_kwargs.ray_init.runtime_env.env_vars
    return (config.algorithm.rollout_correction.bypass_mode, a.rollout.engine_kwargs.vllm.block_size,
            env.get("VLLM_CPU_NUM_OF_RESERVED_CPU"), env.get("AUTOCOA_CPU_UNPACKED_LINEARS"))


def test_the_before_settings_are_real_keys_that_undo_the_cpu_defaults():
    assert step_cost_settings(compose("rl_mixed", ["+platform=rl_cpu", *BEFORE])) == (False, 128, "1", "1")
    assert step_cost_settings(compose("rl_mixed", ["+platform=rl_cpu"])) == (True, 32, None, None)

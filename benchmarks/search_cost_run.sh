#!/bin/bash
# The search-cost reward, measured against all-real GRPO from the same start (benchmarks/results/search_cost.md).
#
#   bash benchmarks/search_cost_run.sh [LEARNING_RUN_DIR] [STEPS]      (default build/bench/learning, 16)
#
# benchmarks/rl_arm_run.sh with reward_kwargs.search_cost=0.1, and world-model probes on 10% of the real observations
# to log the world model's drift as it trains: GRPO from that run's SFT-2+3 model with the learning benchmark's RL
# settings (all-real, 4 questions x 8 samples, lr 2e-5, 768 tokens), then the search-cost run's last export and the
# all-real run's export at the same step evaluated on the whole test split (greedy, bm25 top-3).
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,10p' "$0"; exit 0; fi
exec bash "$(dirname "$0")/rl_arm_run.sh" "${1:-build/bench/learning}" "${2:-16}" search_cost \
  reward.custom_reward_function.reward_kwargs.search_cost=0.1 coa.world_model.probe_sample=0.1 \
  coa.world_model.fidelity_corpus=build/toy/corpus.jsonl

#!/bin/bash
# The search-cost reward, measured against all-real GRPO from the same start (benchmarks/results/search_cost.md).
#
#   bash benchmarks/search_cost_run.sh [LEARNING_RUN_DIR] [STEPS]      (default build/bench/learning, 16)
#
# Runs GRPO with the learning benchmark's RL settings (rl_stage2, all-real, 4 questions x 8 samples, lr 2e-5,
# 768 tokens) and reward_kwargs.search_cost=0.1 from that run's SFT-2+3 model, on its curriculum with each row's hop
# answers added. World-model probes on 10% of the real observations log the world model's drift as it trains.
# Then evaluates the search-cost run's last export and the all-real run's export at the same step on the whole
# test split (greedy, bm25 top-3). Needs a finished `make bench-learning` run with a checkpoint at STEPS.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,10p' "$0"; exit 0; fi
B=${1:-build/bench/learning}
STEPS=${2:-16}
PY=${PY:-.venv/bin/python}
for need in "$B/checkpoints/SFT-2+3" "$B/checkpoints/rl_real/global_step_$STEPS/actor/huggingface" "$B/rl/curriculum.parquet"; do
  [[ -e "$need" ]] || { echo "search_cost_run.sh: $need is missing (run make bench-learning first)" >&2; exit 2; }
done
START=$(ls -d "$B"/checkpoints/SFT-2+3/global_step_*/huggingface | sort -V | tail -1)
PORT=$($PY -c 'from retriever_server.serve import free_port; print(free_port())')
$PY recipes/serve_retriever.py retriever=bm25 corpus_path=build/toy/corpus.jsonl index_dir="$B/bm25-index" \
  server.port="$PORT" server.mode=uvicorn hydra.run.dir="$B/hydra/serve-search-cost" > "$B/logs/retriever-search-cost.log" 2>&1 &
trap "kill $!" EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 2; done
$PY - "$B" <<'PY'
import json, sys
import pandas as pd
b = sys.argv[1]
chains = {row["id"]: [hop["answer"] for hop in row["chain"]] for row in map(json.loads, open("build/toy/train.jsonl"))}
frame = pd.read_parquet(f"{b}/rl/curriculum.parquet")
frame["extra_info"] = frame["extra_info"].map(lambda e: {**e, "chain_answers": chains[e["id"]]})
frame.to_parquet(f"{b}/rl/curriculum_chains.parquet")
PY
$PY recipes/rl.py --config-name rl_stage2 +platform=rl_cpu actor_rollout_ref.model.path="$START" \
  data.train_files="$B/rl/curriculum_chains.parquet" data.val_files=build/toy/dev.parquet \
  coa.retriever.url="http://127.0.0.1:$PORT" data.train_batch_size=4 actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.temperature=1.0 actor_rollout_ref.actor.ppo_mini_batch_size=4 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 data.max_response_length=768 \
  actor_rollout_ref.actor.optim.lr=2e-05 trainer.total_training_steps="$STEPS" trainer.total_epochs=1000 \
  trainer.save_freq=8 trainer.test_freq=-1 trainer.resume_mode=auto \
  trainer.default_local_dir="$B/checkpoints/rl_search_cost" trainer.rollout_data_dir="$B/rl/rl_search_cost/rollouts" \
  hydra.run.dir="$B/hydra/rl_search_cost" reward.custom_reward_function.reward_kwargs.search_cost=0.1 \
  coa.world_model.probe_sample=0.1 coa.world_model.fidelity_corpus=build/toy/corpus.jsonl \
  2>&1 | tee "$B/logs/rl_search_cost.log"
$PY recipes/evaluate.py '~models' \
  "+models={rl_real_$STEPS: $B/checkpoints/rl_real/global_step_$STEPS/actor/huggingface, rl_search_cost_$STEPS: $B/checkpoints/rl_search_cost/global_step_$STEPS/actor/huggingface}" \
  methods=[agent] "baseline_model=rl_real_$STEPS" datasets.toy=build/toy/test.jsonl limit=null \
  retriever_url="http://127.0.0.1:$PORT" max_tokens=768 out_dir="$B/eval/test-search-cost" \
  hydra.run.dir="$B/hydra/test-search-cost"

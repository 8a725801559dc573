#!/bin/bash
# One RL arm measured against all-real GRPO from the same start (search_cost.md, learning.md's notes).
#
#   bash benchmarks/rl_arm_run.sh RUN_DIR STEPS NAME [--stratify] [HYDRA_OVERRIDE ...]
#
# Runs GRPO with the learning benchmark's RL settings (rl_stage2, all-real, 4 questions x 8 samples, lr 2e-5,
# 768 tokens) from RUN_DIR's SFT-2+3 model on its curriculum, each row's hop answers added, plus the overrides.
# --stratify deals the curriculum round-robin over hop counts and reads it in order (data.shuffle=false), so each
# step's 4 questions have 0, 1, 2 and 3 hops. Then evaluates the arm's last export and the all-real run's export at
# the same step on the whole test split (greedy, bm25 top-3). Writes checkpoints/rl_NAME, rl/rl_NAME/rollouts,
# eval/test-NAME (underscores as hyphens). Needs a finished `make bench-learning` run with a checkpoint at STEPS.
set -euo pipefail
if [[ $# -lt 3 || "$1" == "-h" || "$1" == "--help" ]]; then sed -n '2,11p' "$0"; [[ $# -ge 1 ]]; exit $?; fi
B=$1 STEPS=$2 NAME=$3
shift 3
STRATIFY=0
if [[ "${1:-}" == "--stratify" ]]; then STRATIFY=1; shift; fi
PY=${PY:-.venv/bin/python}
for need in "$B/checkpoints/SFT-2+3" "$B/checkpoints/rl_real/global_step_$STEPS/actor/huggingface" "$B/rl/curriculum.parquet"; do
  [[ -e "$need" ]] || { echo "$(basename "$0"): $need is missing (run make bench-learning first)" >&2; exit 2; }
done
START=$(ls -d "$B"/checkpoints/SFT-2+3/global_step_*/huggingface | sort -V | tail -1)
PORT=$($PY -c 'from retriever_server.serve import free_port; print(free_port())')
$PY recipes/serve_retriever.py retriever=bm25 corpus_path=build/toy/corpus.jsonl index_dir="$B/bm25-index" \
  server.port="$PORT" server.mode=uvicorn hydra.run.dir="$B/hydra/serve-$NAME" > "$B/logs/retriever-$NAME.log" 2>&1 &
trap "kill $!" EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 2; done
DATA="$B/rl/curriculum_$NAME.parquet"
$PY - "$B/rl/curriculum.parquet" "$DATA" "$STRATIFY" <<'PY'
import json, sys
import pandas as pd
from autocoa_verl.data.curriculum import stratified_order
source, out, stratify = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
chains = {row["id"]: [hop["answer"] for hop in row["chain"]] for row in map(json.loads, open("build/toy/train.jsonl"))}
frame = pd.read_parquet(source)
frame["extra_info"] = frame["extra_info"].map(lambda e: {**e, "chain_answers": chains[e["id"]]})
if stratify:
    order = stratified_order(range(len(frame)), key=lambda i: len(frame["extra_info"][i]["chain_answers"]))
    frame = frame.iloc[order].reset_index(drop=True)
frame.to_parquet(out)
PY
SHUFFLE=$([[ $STRATIFY == 1 ]] && echo false || echo true)
$PY recipes/rl.py --config-name rl_stage2 +platform=rl_cpu actor_rollout_ref.model.path="$START" \
  data.train_files="$DATA" data.val_files=build/toy/dev.parquet data.shuffle="$SHUFFLE" \
  coa.retriever.url="http://127.0.0.1:$PORT" data.train_batch_size=4 actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.temperature=1.0 actor_rollout_ref.actor.ppo_mini_batch_size=4 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 data.max_response_length=768 \
  actor_rollout_ref.actor.optim.lr=2e-05 trainer.total_training_steps="$STEPS" trainer.total_epochs=1000 \
  trainer.save_freq=8 trainer.test_freq=-1 trainer.resume_mode=auto \
  trainer.default_local_dir="$B/checkpoints/rl_$NAME" trainer.rollout_data_dir="$B/rl/rl_$NAME/rollouts" \
  hydra.run.dir="$B/hydra/rl_$NAME" "$@" 2>&1 | tee "$B/logs/rl_$NAME.log"
$PY recipes/evaluate.py '~models' \
  "+models={rl_real_$STEPS: $B/checkpoints/rl_real/global_step_$STEPS/actor/huggingface, rl_${NAME}_$STEPS: $B/checkpoints/rl_$NAME/global_step_$STEPS/actor/huggingface}" \
  methods=[agent] "baseline_model=rl_real_$STEPS" datasets.toy=build/toy/test.jsonl limit=null \
  retriever_url="http://127.0.0.1:$PORT" max_tokens=768 out_dir="$B/eval/test-${NAME//_/-}" \
  hydra.run.dir="$B/hydra/test-${NAME//_/-}"

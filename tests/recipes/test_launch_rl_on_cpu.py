"""The Ray-job launcher builds the job that a cluster runs: retriever deploy-or-reuse, then the RL recipe."""

import shlex
import subprocess
import sys
from pathlib import Path

from recipes.launch_rl import entrypoint, parse_args, runtime_env

ROOT = Path(__file__).resolve().parents[2]


def test_the_job_deploys_the_retriever_then_trains_against_it():
    args = parse_args(["--config-name", "rl_mixed", "--retriever", "dense", "--retriever-port", "9001",
                       "--corpus", "/shared/c.jsonl", "--replicas", "2", "--", "trainer.nnodes=2",
                       "data.train_files=/shared/a b.parquet"])
    serve, train = (shlex.split(step) for step in entrypoint(args).split(" && "))
    assert serve[:2] == ["python", "recipes/serve_retriever.py"]
    assert {"retriever=dense", "server.ray_address=auto", "server.detach=true", "server.port=9001",
            "server.replicas=2", "corpus_path=/shared/c.jsonl", "index_dir=build/index/dense"} <= set(serve)
    assert train == ["python", "recipes/rl.py", "--config-name", "rl_mixed", "coa.retriever.url=http://127.0.0.1:9001",
                     "trainer.nnodes=2", "data.train_files=/shared/a b.parquet"]


def test_a_given_retriever_url_deploys_nothing():
    command = entrypoint(parse_args(["--retriever-url", "http://search:8000"]))
    assert "serve_retriever" not in command and "coa.retriever.url=http://search:8000" in command


def test_runtime_env_uploads_the_project_without_build_outputs():
    env = runtime_env()
    assert Path(env["working_dir"]) == ROOT and "build/" in env["excludes"] and ".venv*/" in env["excludes"]


def test_dry_run_prints_and_submits_nothing():
    out = subprocess.run([sys.executable, "recipes/launch_rl.py", "--dry-run", "--address", "http://127.0.0.1:1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "entrypoint: python recipes/serve_retriever.py" in out.stdout

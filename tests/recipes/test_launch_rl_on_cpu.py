"""The Ray-job launcher builds the job that a cluster runs: retriever deploy-or-reuse, then the RL recipe."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.launch_rl import entrypoint, parse_args, runtime_env, submit

ROOT = Path(__file__).resolve().parents[2]


def test_the_job_deploys_the_retriever_then_trains_against_it():
    args = parse_args(["--config-name", "rl_mixed", "--retriever", "dense", "--retriever-port", "9001",
                       "--corpus", "/shared/c.jsonl", "--index-dir", "/shared/index/dense", "--replicas", "2", "--",
                       "trainer.nnodes=2",
                       "data.train_files=/shared/a b.parquet"])
    serve, train = (shlex.split(step) for step in entrypoint(args).split(" && "))
    assert serve[:2] == ["python", "recipes/serve_retriever.py"]
    assert {"retriever=dense", "server.ray_address=auto", "server.detach=true", "server.port=9001",
            "server.replicas=2", "corpus_path=/shared/c.jsonl", "index_dir=/shared/index/dense"} <= set(serve)
    assert train == ["python", "recipes/rl.py", "--config-name", "rl_mixed", "coa.retriever.url=http://127.0.0.1:9001",
                     "trainer.nnodes=2", "data.train_files=/shared/a b.parquet"]


def test_a_given_retriever_url_deploys_nothing():
    command = entrypoint(parse_args(["--retriever-url", "http://search:8000"]))
    assert "serve_retriever" not in command and "coa.retriever.url=http://search:8000" in command


def test_runtime_env_uploads_the_project_without_build_outputs():
    env = runtime_env()
    assert Path(env["working_dir"]) == ROOT and "build/" in env["excludes"] and ".venv*/" in env["excludes"]


SHARED = ["actor_rollout_ref.model.path=/shared/sft3", "data.train_files=/shared/train.parquet",
          "data.val_files=/shared/dev.parquet", "trainer.default_local_dir=/shared/ckpt"]


def launch(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "recipes/launch_rl.py", "--dry-run", "--address", "http://127.0.0.1:1",
                           *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_dry_run_prints_and_submits_nothing():
    out = launch("--corpus", "/shared/c.jsonl", "--index-dir", "/shared/index", "--", *SHARED)
    assert out.returncode == 0, out.stderr
    assert "entrypoint: python recipes/serve_retriever.py" in out.stdout


def test_paths_that_would_not_reach_the_job_are_refused_in_one_line():
    """The README's paths as a user would first write them: under build/, which the upload excludes, and the
    config's own relative defaults (model, data, the checkpoint directory the job would write into its copy)."""
    out = launch("--corpus", "build/toy/corpus.jsonl", "--index-dir", "build/index/bm25", "--",
                 "data.val_files=/shared/dev.parquet")
    assert out.returncode == 1 and out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    for bad in ("--corpus=build/toy/corpus.jsonl", "--index-dir=build/index/bm25",
                "actor_rollout_ref.model.path=build/checkpoints/sft_stage3/huggingface",
                "data.train_files=build/toy/train.parquet", "trainer.default_local_dir=build/checkpoints/rl_stage2"):
        assert bad in line, bad
    assert "data.val_files" not in line and "absolute paths on storage every node sees" in line


def test_a_hub_model_id_and_an_outside_retriever_pass():
    out = launch("--retriever-url", "http://search:8000", "--", *SHARED[1:], "actor_rollout_ref.model.path=org/model")
    assert out.returncode == 0, out.stderr


def test_deploying_the_retriever_needs_its_corpus_and_index():
    out = launch("--", *SHARED)
    assert out.returncode == 1 and "--corpus and --index-dir are needed" in out.stderr


class _Client:
    """A job-submission client whose cluster answers with the given errors first."""

    def __init__(self, *errors):
        self.errors, self.calls = list(errors), 0

    def submit_job(self, **job):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return job["submission_id"]


def test_submission_waits_for_the_job_agent_and_nothing_else(capsys):
    not_ready = RuntimeError("Request failed with status code 500: No available agent to submit job, please try "
                             "again later..")
    client = _Client(not_ready, not_ready)
    assert submit(client, attempts=3, wait_s=0, submission_id="j") == "j" and client.calls == 3
    assert "job agent is not ready yet; retrying in 0 s (2/3)" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="No available agent"):
        submit(_Client(not_ready, not_ready, not_ready), attempts=3, wait_s=0, submission_id="j")
    other = _Client(RuntimeError("Job with submission_id j already exists"))
    with pytest.raises(RuntimeError, match="already exists"):
        submit(other, attempts=3, wait_s=0, submission_id="j")
    assert other.calls == 1

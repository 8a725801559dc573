"""Submit an RL stage to a running Ray cluster as a Ray job, with the retriever as a Ray Serve application there.

    python recipes/launch_rl.py --address http://HEAD:8265 --config-name rl_stage2 \\
        --corpus /shared/corpus.jsonl --index-dir /shared/index/bm25 -- \\
        actor_rollout_ref.model.path=/shared/sft3 data.train_files=/shared/train.parquet trainer.nnodes=2

The job's first step deploys the retriever (``recipes/serve_retriever.py server.detach=true``) into the cluster, or
reuses the one already running under ``--app-name``; ``--retriever-url`` skips that and uses a server you run. The
second step is exactly ``recipes/rl.py`` with your Hydra overrides. The project directory is the job's working_dir
(uploaded; build outputs and virtualenvs excluded), so models, data, indexes and checkpoints must be on storage every
node sees: the launcher refuses paths that would not reach the job (``check_paths``).
"""

from __future__ import annotations

import argparse
import fnmatch
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
EXCLUDES = ["build/", ".venv*/", "outputs/", "checkpoints/", ".git/", "**/__pycache__/", "*.egg-info/"]
# the RL config's fields that name files the job reads, and (OUTPUTS) directories it writes
INPUTS = ["actor_rollout_ref.model.path", "data.train_files", "data.val_files"]
OUTPUTS = ["trainer.default_local_dir", "trainer.rollout_data_dir", "trainer.validation_data_dir"]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--address", default="http://127.0.0.1:8265",
                        help="the cluster's job-submission (dashboard) address (default: %(default)s)")
    parser.add_argument("--config-name", default="rl_stage2", choices=["rl_stage1", "rl_stage2", "rl_mixed"])
    parser.add_argument("--retriever", default="bm25", help="retriever backend to deploy (hydra_configs/retriever/)")
    parser.add_argument("--corpus", help="corpus jsonl to deploy the retriever on, on storage the nodes see")
    parser.add_argument("--index-dir", help="its built index (make index), on storage the nodes see")
    parser.add_argument("--retriever-port", type=int, default=8000, help="Ray Serve HTTP port on every node")
    parser.add_argument("--replicas", type=int, default=1, help="retriever replicas")
    parser.add_argument("--app-name", default="retriever", help="Serve application name (shared across jobs)")
    parser.add_argument("--retriever-url", default=None, help="use this running retriever; deploy none")
    parser.add_argument("--submission-id", default=None, help="job id (default: autocoa-<config>-<time>)")
    parser.add_argument("--no-wait", action="store_true", help="submit and return instead of following the logs")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the job's entrypoint and runtime env; submit nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for recipes/rl.py (after --)")
    return parser.parse_args(argv)


def entrypoint(args: argparse.Namespace) -> str:
    """The job's shell command: deploy-or-reuse the retriever, then the RL recipe."""
    url = args.retriever_url or f"http://127.0.0.1:{args.retriever_port}"
    steps = []
    if not args.retriever_url:
        steps.append(["python", "recipes/serve_retriever.py", f"retriever={args.retriever}",
                      f"corpus_path={args.corpus}", f"index_dir={args.index_dir}", "server.mode=ray",
                      "server.ray_address=auto", "server.detach=true", f"server.port={args.retriever_port}",
                      f"server.replicas={args.replicas}", f"server.app_name={args.app_name}",
                      "hydra.run.dir=outputs/serve_retriever"])
    steps.append(["python", "recipes/rl.py", "--config-name", args.config_name, f"coa.retriever.url={url}",
                  *args.overrides])
    return " && ".join(shlex.join(step) for step in steps)


def _excluded(path: str) -> bool:
    """Whether a relative path lies under a directory the upload excludes (``build/...``, ``.venv-gpu/...``)."""
    top = Path(path).parts[0] + "/" if Path(path).parts else ""
    return any(fnmatch.fnmatch(top, pattern) for pattern in EXCLUDES)


def check_paths(args: argparse.Namespace) -> None:
    """Raises ``SystemExit`` with one line naming every path that would not reach the job: an input under a directory
    the upload excludes, or a relative output directory (the job writes it into its temporary copy of the project,
    which is discarded). Absolute paths pass: shared storage is the documented way."""
    from omegaconf import OmegaConf

    from autocoa_verl.config import compose

    if not args.retriever_url and not (args.corpus and args.index_dir):
        raise SystemExit("launch_rl: --corpus and --index-dir are needed to deploy the retriever (or --retriever-url "
                         "to use a running one)")
    config = compose(args.config_name, args.overrides)
    found = [] if args.retriever_url else [("--corpus", args.corpus), ("--index-dir", args.index_dir)]
    for key in INPUTS + OUTPUTS:
        value = OmegaConf.select(config, key)
        found += [(key, path) for path in ([value] if isinstance(value, str) else list(value or []))]
    bad = [f"{key}={path}" for key, path in found if not Path(path).is_absolute()
           and (_excluded(path) or key in OUTPUTS)]
    if bad:
        raise SystemExit(f"launch_rl: {', '.join(bad)}: relative paths do not reach a Ray job (its working_dir is an "
                         "upload of the project without build/, and what it writes there is discarded); pass "
                         "absolute paths on storage every node sees (README: On a Ray cluster)")


def runtime_env() -> dict:
    return {"working_dir": str(ROOT), "excludes": EXCLUDES,
            "env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}}


AGENT_NOT_READY = "No available agent to submit job"


def submit(client, attempts: int = 12, wait_s: float = 5.0, **job) -> str:
    """``client.submit_job(**job)``, retried while the cluster's job agent is not up yet (Ray answers 500 "No
    available agent" for a while after ``ray start``); any other failure is raised at once."""
    for attempt in range(1, attempts):
        try:
            return client.submit_job(**job)
        except RuntimeError as error:
            if AGENT_NOT_READY not in str(error):
                raise
            print(f"the cluster's job agent is not ready yet; retrying in {wait_s:.0f} s ({attempt}/{attempts})",
                  flush=True)
            time.sleep(wait_s)
    return client.submit_job(**job)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_paths(args)
    command, env = entrypoint(args), runtime_env()
    submission_id = args.submission_id or f"autocoa-{args.config_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.dry_run:
        print(f"submission_id: {submission_id}\nentrypoint: {command}\nruntime_env: {env}")
        return 0
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(args.address)
    job = submit(client, entrypoint=command, runtime_env=env, submission_id=submission_id)
    print(f"submitted {job} to {args.address}\n  logs: ray job logs --address {args.address} -f {job}\n"
          f"  stop: ray job stop --address {args.address} {job}", flush=True)
    if args.no_wait:
        return 0

    import asyncio

    async def follow() -> None:
        async for lines in client.tail_job_logs(job):
            print(lines, end="", flush=True)

    asyncio.run(follow())
    status = client.get_job_status(job)
    print(f"job {job}: {status}")
    return 0 if status == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())

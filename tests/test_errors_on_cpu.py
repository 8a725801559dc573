"""A user error at the command line is one line on stderr and exit status 1; HYDRA_FULL_ERROR=1 shows the traceback."""

import os
import subprocess
import sys

import pytest

from autocoa_verl.errors import ConfigError, user_errors
from autocoa_verl.rl_preflight import RLConfigError


def _run(args, **env):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0", **env})


def test_a_missing_rl_model_is_one_line_without_a_traceback(tmp_path):
    args = ["recipes/rl.py", f"actor_rollout_ref.model.path={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path / 'h'}"]
    out = _run(args)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: actor_rollout_ref.model.path={str(tmp_path / 'nope')!r}: no Hugging Face model there (config.json). "
        "Run the SFT stages first (make sft-stage3) or pass MODEL=."]
    full = _run(args, HYDRA_FULL_ERROR="1")
    assert full.returncode == 1 and "Traceback" in full.stderr and "RLConfigError" in full.stderr


def test_a_bad_question_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q?"}\n')
    out = _run(["-m", "autocoa_verl.data.qa_files", str(bad), str(tmp_path / "o.parquet")])
    assert out.returncode == 2 and "Traceback" not in out.stderr  # argparse's status for bad input
    assert out.stderr.startswith("error: ") and "bad.jsonl:1" in out.stderr


def test_a_missing_input_file_through_a_wrapped_cli_is_one_line(tmp_path, toy_world_dir, tiny_model_dir):
    out = _run(["-m", "autocoa_verl.data.oracle", str(tmp_path / "nope.jsonl"), str(toy_world_dir / "corpus.jsonl"),
                str(tmp_path / "o.parquet"), "--tokenizer", str(tiny_model_dir), "--index-dir", str(tmp_path / "i")])
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error: ") and "nope.jsonl" in out.stderr


def test_bugs_keep_their_traceback():
    @user_errors
    def broken():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        broken()
    assert issubclass(RLConfigError, ConfigError)

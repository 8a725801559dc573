"""benchmarks/gpu_smoke.sh cannot run without a GPU; here its shell parses, --help answers, and --dry-run expands every
step through make -n: the GPU lock's install, SDPA without flash-attn, and the short SFT, RL and evaluation runs."""

import subprocess

from autocoa_verl.config import config_dir

SCRIPT = config_dir().parent / "benchmarks" / "gpu_smoke.sh"


def smoke(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *argv], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_it_parses_and_answers_help():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    out = smoke("--help")
    assert out.returncode == 0 and "under 10 minutes" in out.stdout and "gpu_smoke.json" in out.stdout


def test_dry_run_expands_every_step_for_the_gpu_stack(tmp_path):
    out = smoke("--dry-run", BUILD=str(tmp_path / "b"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.replace("\\\n", " ").splitlines()  # make -n keeps the recipes' line continuations
    install = next(line for line in lines if "-r requirements/lock-gpu.txt" in line)
    assert "--no-deps" in install and "--only-binary=:all:" in install  # the lock as it is, never a source build
    assert not any("lock-cpu.txt" in line for line in lines)  # DEVICE=gpu: no target pulls the CPU stack in
    rl = next(line for line in lines if "recipes/rl.py --config-name rl_stage2" in line)
    assert "+platform=rl_sdpa" in rl and "trainer.total_training_steps=2" in rl and "+platform=rl_cpu" not in rl
    sft = next(line for line in lines if "recipes/sft.py --config-name sft_stage2" in line)
    assert "+platform=sft_sdpa" in sft and "+platform=sft_cpu" not in sft
    assert any("recipes/evaluate.py" in line and "limit=20" in line for line in lines)

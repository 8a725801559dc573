"""The configs travel with the package: the wheel holds every YAML, and an installed copy composes them from
anywhere (no checkout, no working-directory assumption)."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from autocoa_verl.config import config_dir

pytestmark = pytest.mark.e2e  # builds and installs a wheel


def test_the_wheel_ships_every_config_and_composes_from_the_installed_package(tmp_path):
    root, source = config_dir().parent, tmp_path / "src"  # build from a copy: the checkout stays untouched
    for package in ("autocoa_verl", "retriever_server", "hydra_configs"):
        shutil.copytree(root / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "setup.py", source / "setup.py")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("autocoa_verl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"hydra_configs/{p.relative_to(config_dir())}" for p in config_dir().rglob("*.yaml")}
    assert expected and expected <= names, sorted(expected - names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = ("import hydra_configs, autocoa_verl.config as c; "
             "cfg = c.compose('rl_mixed', ['+platform=rl_cpu']); "
             "print(hydra_configs.__file__); print(cfg.coa.schedule.kind, cfg.trainer.device)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    where, values = out.stdout.strip().splitlines()[-2:]
    assert where.startswith(str(target)) and values == "ratio cpu"

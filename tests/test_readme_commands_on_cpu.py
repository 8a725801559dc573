"""Every Hydra command in the README composes against its config, so the README cannot drift from the configs."""

import re
import shlex
from pathlib import Path

import pytest

from autocoa_verl.config import compose

ROOT = Path(__file__).resolve().parents[1]
# make target -> (config, the variable that carries Hydra overrides)
MAKE_TARGETS = {"rl-stage1": ("rl_stage1", "RL_ARGS"), "rl-stage2": ("rl_stage2", "RL_ARGS"),
                "rl": ("rl_mixed", "RL_ARGS"),
                "sft-stage1": ("sft_stage1", "SFT_ARGS"), "sft-stage2": ("sft_stage2", "SFT_ARGS"),
                "sft-stage3": ("sft_stage3", "SFT_ARGS"), "eval": ("eval", "EVAL_ARGS"),
                "synthesize": ("synthesis", "SYNTH_ARGS")}


def readme_commands() -> list[str]:
    """The shell commands of the README's bash blocks, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def default_config(recipe: str) -> str:
    return re.search(r'config_name="(\w+)"', (ROOT / recipe).read_text()).group(1)


def hydra_invocations() -> list[tuple[str, list[str], str]]:
    """(config name, overrides, the command as written) for each README command that runs a Hydra config."""
    out = []
    for words in readme_commands():
        line = " ".join(words)
        if words[0] == "python" and words[1].startswith("recipes/") and words[1] != "recipes/launch_rl.py":
            args = words[2:]
            name = args[args.index("--config-name") + 1] if "--config-name" in args else default_config(words[1])
            out.append((name, [a for a in args if ("=" in a or a.startswith("~")) and not a.startswith("-")], line))
        elif words[0] == "python" and words[1] == "recipes/launch_rl.py":
            args = words[2:]
            out.append((args[args.index("--config-name") + 1], args[args.index("--") + 1:], line))
        elif words[0] == "make" and len(words) > 1 and words[1] in MAKE_TARGETS:
            name, var = MAKE_TARGETS[words[1]]
            value = next((w.split("=", 1)[1] for w in words[2:] if w.startswith(var + "=")), "")
            out.append((name, shlex.split(value), line))
    return out


INVOCATIONS = hydra_invocations()


def test_the_readme_has_hydra_commands_to_check():
    names = {name for name, _, _ in INVOCATIONS}
    assert {"rl_stage2", "eval", "retriever_server"} <= names, names


@pytest.mark.parametrize("name, overrides, line", INVOCATIONS, ids=[line[:60] for _, _, line in INVOCATIONS])
def test_readme_command_composes(name, overrides, line):
    compose(name, overrides)

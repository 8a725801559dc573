"""The one way to compose the project's Hydra configs from code (library, benchmarks, tests).

The configs live in the ``hydra_configs`` package (YAML shipped as package data, ``pkg://hydra_configs``), so they are
found the same way from a checkout, an editable install or a wheel. Recipes name the same place in ``@hydra.main``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

CONFIG_MODULE = "hydra_configs"


def config_dir() -> Path:
    """The directory the configs are read from (for listing them; compose with :func:`compose`)."""
    import hydra_configs

    return Path(hydra_configs.__file__).resolve().parent


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``hydra_configs/<config_name>.yaml`` with Hydra overrides. Works inside a ``@hydra.main`` app too (its config
    is already composed; the global search state is released first)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base=None):
        return hydra_compose(config_name, overrides=list(overrides))

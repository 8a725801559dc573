"""The project's Hydra configs (YAML only), shipped as package data and found as ``pkg://hydra_configs``."""

"""autocoa_verl: AutoCoA agent-model training (SFT stages and GRPO with search) as a verl extension.

Install through `make install` (it pins everything with requirements/lock-cpu.txt); see README.md.
"""

from setuptools import find_packages, setup

setup(
    name="autocoa_verl",
    version="0.1.0",
    description="Train agent models that search inside their chain of thought (AutoCoA) on verl",
    python_requires=">=3.10",
    packages=find_packages(include=["autocoa_verl", "autocoa_verl.*", "retriever_server", "retriever_server.*",
                                    "hydra_configs"]),
    # the Hydra configs travel with the package (pkg://hydra_configs); tests/test_packaging_on_cpu.py checks the wheel
    package_data={"hydra_configs": ["*.yaml", "*/*.yaml"]},
    # Versions are pinned in requirements/lock-cpu.txt (CPU) and requirements/gpu.txt (GPU); these are the direct
    # dependencies. verl is pinned because the agent loop, reward-manager and platform hooks we extend changed
    # shape between minor releases (0.9.1 is the version every hook here was written and tested against).
    install_requires=[
        "verl==0.9.1",
        "torch",
        "transformers",
        "tokenizers",
        "hydra-core",
        "omegaconf",
        "ray",
        "pandas",
        "pyarrow",
        "tqdm",
        "psutil",
        "fastapi",
        "uvicorn",
        "cachetools",
        "matplotlib",
    ],
    extras_require={
        "dev": ["pytest"],
    },
    entry_points={
        # Loaded by verl at import time; it only registers a "cpu" platform, selected with VERL_PLATFORM=cpu.
        "verl.plugins": ["autocoa_cpu = autocoa_verl.cpu.platform"],
    },
)

"""tailmix: learn how much diffusion-generated data to mix into each class of a long-tailed dataset."""
from setuptools import find_packages, setup

# The repository keeps the design card's layout (envs/, agents/, generators/, classifiers/ at the top, so a reader
# finds a concept by its folder), but installed they live under one name, tailmix, so that a user's own envs/ or
# agents/ package never shadows them: package_dir maps each folder under tailmix.
SUBPACKAGES = ("envs", "agents", "generators", "classifiers")
# Sub-packages inside tailmix/ itself (tailmix.io, the bottom layer) need no mapping, only listing.
PACKAGES = ["tailmix"] + [f"tailmix.{sub}" for sub in find_packages(where="tailmix")] + [
    f"tailmix.{name}" for name in SUBPACKAGES] + [
    f"tailmix.{name}.{sub}" for name in SUBPACKAGES for sub in find_packages(where=name)]
PACKAGE_DIR = {"tailmix": "tailmix", **{f"tailmix.{name}": name for name in SUBPACKAGES}}

# The pretrained generator kind's text encoder and tokenizer (generators/pretrained.py; Stable Diffusion layout with
# prompts). Tested with transformers 5.25.0; the kind says in one line to install this extra when it is missing.
PIPELINES = ["transformers>=4.40"]

with open("README.md", encoding="utf-8") as fh:
    long_description = fh.read()

setup(
    name="tailmix",
    version="0.2.0",
    description=(
        "A PettingZoo/gymnasium RL environment in which per-class agents choose how many "
        "synthetic (diffusion-generated) images to mix into a long-tailed training set."
    ),
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    # the suite's reference scores ship as data (tailmix.suite.reference_scores / normalized_score read them)
    package_data={"tailmix.suite": ["reference_scores.json"]},
    install_requires=[
        "numpy>=1.24",
        "gymnasium>=1.0",
        "pettingzoo>=1.27",
        "stable-baselines3>=2.3",
        "torch>=2.2",
        "torchvision>=0.17",
        "diffusers>=0.30",
        "peft>=0.12",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        "tensorboard>=2.14",
        "tqdm>=4.66",
        "rich>=13",
        "matplotlib>=3.7",
        "pillow>=10",
    ],
    extras_require={
        # supersuit: the PettingZoo + SB3 tutorial's concat_vec_envs_v1 path (tests/agents/test_interop_libraries.py);
        # a pure-Python package and one small wheel (tinyscaler), about 2 s on top of the base install
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "supersuit>=3.9", *PIPELINES],
        "pipelines": PIPELINES,
        "medmnist": ["medmnist>=3.0"],
        # The docs site (mkdocs.yml; .ci/run builds it with --strict). Tested with mkdocs 1.6.1.
        "docs": ["mkdocs>=1.6,<2"],
        "ray": ["ray[rllib]>=2.60,<3"],
        # TorchRL's wrappers (tests/agents/test_torchrl.py); tested with torchrl 0.14.1 / tensordict 0.14.3 on torch
        # 2.14.1. A torchrl minor release follows a torch release, hence the upper bound.
        "torchrl": ["torchrl>=0.14.1,<0.15"],
        # Tianshou's own vector envs and PPO on the gymnasium ids (docs/integrations.md; its snippet is tested after
        # the base suite in .ci/run). Tested with tianshou 2.0.1 on gymnasium 1.4.
        "tianshou": ["tianshou>=2.0.1,<3"],
    },
    entry_points={"console_scripts": ["train_agents=tailmix.train_agents:cli", "tailmix=tailmix.train_agents:cli"]},
)

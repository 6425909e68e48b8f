"""``python train_agents.py`` from a checkout: the CLI lives in ``tailmix.train_agents`` (also installed as the
``tailmix`` and ``train_agents`` commands)."""
from tailmix.train_agents import cli

if __name__ == "__main__":
    cli()

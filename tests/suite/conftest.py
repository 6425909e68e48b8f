"""Fixtures of the suite tests: a tiny task with tiny protocol budgets, outputs in a temporary folder."""
import pytest

from tailmix.suite import protocol as P
from tailmix.suite import report, tasks
from tailmix.suite.tasks import TASKS, Task

TINY = Task(name="TinyPoolTest", version=0, summary="a test task", dataset={"kind": "digits-lt"},
            sources=("oracle", "augment"),
            env={"max_steps": 2, "encoder_epochs": 1, "encoder_folds": 2, "pool_size": 16, "lr_schedule": "constant"})


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    import gymnasium
    import pettingzoo

    tasks.register_task(TINY)
    for name, value in {"EVAL_SEEDS": (1000, 1001), "METHOD_SEEDS": (0, 1), "LT_LOSSES": ("logit_adjustment",),
                        "STATIC_SHAPES": ("none", "constant:1", "fill"), "SCHEDULES": ("decay:fill",),
                        "CEM": {"generations": 2, "population": 4, "episodes": 1, "knots": 2},
                        "CEILING": {"generations": 1, "population": 4, "episodes": 1}, "BOOT_REPS": 100,
                        "PIXEL_SEEDS": (1000,),
                        "FIDELITY": {"seeds": (2000, 2001, 2002), "fixed_members": 3, "threshold": 0.8,
                                     "level": 0.95},
                        "LEARNED": ("cem-static", "cem-schedule", "ppo-central"),
                        "SB3_METHODS": {"ppo-central": {"algo": "ppo", "wrapper": "central", "env": {},
                                                        "timesteps": {"digits": 64, "medmnist": 64}},
                                        "ppo-shared": {"algo": "ppo", "wrapper": "shared", "env": {},
                                                       "timesteps": {"digits": 64, "medmnist": 64}}},
                        "TRANSFER": {"source": "TinyPoolTest", "target": "TinyPoolTest", "method": "ppo-shared",
                                     "seeds": (0,), "timesteps": 64}}.items():
        monkeypatch.setattr(P, name, value)
    monkeypatch.setattr(report, "DOCS", tmp_path / "docs")
    monkeypatch.setattr(report, "REFERENCE_PATH", tmp_path / "reference.json")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.MARK[0]}\nold\n{report.MARK[1]}\nend\n")
    monkeypatch.setattr(report, "README", readme)
    yield {"runs": tmp_path / "runs", "cache": str(tmp_path / "cache"), "tmp": tmp_path}
    TASKS.pop(TINY.name, None)
    gymnasium.registry.pop(TINY.central_id, None)
    pettingzoo.parallel_registry.pop(TINY.id, None) if hasattr(pettingzoo, "parallel_registry") else None

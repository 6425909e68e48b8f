"""The benchmark suite: registered tasks, the protocol's runner, reference scores as data.

    import gymnasium, tailmix
    env = gymnasium.make("tailmix/KnownAnswerCentral-v0")          # a task's gymnasium env
    from tailmix.suite import TASKS, normalized_score
    normalized_score("KnownAnswer", 0.95)                          # 0 = best fixed (protocol), 100 = ceiling

See ``docs/suite.md`` (tasks and cards), ``docs/protocol.md`` (the protocol, committed before its runs) and
``tailmix bench`` (score your own policy under the protocol).
"""
from __future__ import annotations

from tailmix.suite.tasks import TASKS, Task, get_task, make, register_task, task_env_kwargs

__all__ = ["TASKS", "Task", "get_task", "make", "register_task", "task_env_kwargs", "normalized_score",
           "reference_scores"]


def __getattr__(name: str):
    if name in ("normalized_score", "reference_scores"):
        from tailmix.suite import reference

        return getattr(reference, name)
    raise AttributeError(f"module 'tailmix.suite' has no attribute {name!r}")

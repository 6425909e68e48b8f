"""Suite tasks: registered ids, recipes, one-line errors before work, the official checkers on a task env."""
import gymnasium
import pettingzoo
import pytest

import tailmix  # noqa: F401  registers the ids
from tailmix.suite import TASKS, get_task
from tailmix.suite.tasks import Task, check_data, task_env_kwargs

FAST = {"encoder_epochs": 1, "encoder_folds": 2, "pool_size": 16, "max_steps": 2}


def test_every_task_is_registered_under_both_ids():
    assert {"KnownAnswer", "DigitsLTPool", "RetinaMNISTLTPool", "BreastMNISTLTPool"} <= set(TASKS)
    for task in TASKS.values():
        assert task.central_id in gymnasium.registry
        assert task.id in pettingzoo.parallel_registry
        assert len(task.sources) >= 1


def test_the_real_data_tasks_are_pool_tasks():
    for name in ("DigitsLTPool", "RetinaMNISTLTPool", "BreastMNISTLTPool", "RetinaMNISTPool", "BreastMNISTPool"):
        assert len(TASKS[name].sources) >= 2, name


def test_get_task_takes_names_ids_and_aliases():
    t = TASKS["KnownAnswer"]
    for key in ("KnownAnswer", "known-answer", "tailmix/KnownAnswer-v0", "tailmix/KnownAnswerCentral-v0"):
        assert get_task(key) is t
    with pytest.raises(ValueError, match="unknown suite task"):
        get_task("KnownAnswer-v7")
    with pytest.raises(ValueError, match="unknown suite task"):
        get_task("nope")


def test_the_fingerprint_follows_the_recipe():
    t = TASKS["RetinaMNISTLTPool"]
    other = Task(**{**t.__dict__, "env": {**t.env, "max_ratio": 4.0}})
    assert other.fingerprint() != t.fingerprint()
    assert Task(**t.__dict__).fingerprint() == t.fingerprint()


def test_a_missing_data_file_fails_in_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("TAILMIX_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        task_env_kwargs("RetinaMNISTLTPool")
    msg = str(err.value)
    assert "retinamnist.npz" in msg and "TAILMIX_DATA_DIR" in msg and "\n" not in msg
    monkeypatch.delenv("TAILMIX_DATA_DIR")
    with pytest.raises(FileNotFoundError, match="not set"):
        gymnasium.make("tailmix/BreastMNISTLTPoolCentral-v0")
    assert check_data(TASKS["KnownAnswer"]) is None  # digits: embedded, no file


def test_a_task_env_passes_the_checkers_and_records_its_task(tmp_path):
    from gymnasium.utils.env_checker import check_env
    from pettingzoo.test import parallel_api_test

    env = gymnasium.make("tailmix/KnownAnswerCentral-v0", cache_dir=str(tmp_path), **FAST)
    check_env(env.unwrapped, skip_render_check=True)
    tag = env.unwrapped.suite_task
    assert tag["id"] == "tailmix/KnownAnswer-v0" and tag["version"] == 0
    assert tag["fingerprint"] == TASKS["KnownAnswer"].fingerprint() and tag["overrides"] == sorted(FAST)
    par = pettingzoo.make("parallel", "tailmix/KnownAnswer-v0", cache_dir=str(tmp_path), **FAST) \
        if hasattr(pettingzoo, "make") else None
    if par is None:
        from tailmix.suite.tasks import parallel_env

        par = parallel_env("KnownAnswer", cache_dir=str(tmp_path), **FAST)
    parallel_api_test(par, num_cycles=3)


@pytest.mark.realdata
def test_a_medical_lt_task_builds_its_pool(tmp_path):
    import os

    if not os.environ.get("TAILMIX_DATA_DIR"):
        pytest.skip("TAILMIX_DATA_DIR is not set")
    kw = task_env_kwargs("BreastMNISTLTPool", cache_dir=tmp_path, progress=False)
    ds = kw["dataset"]
    assert sorted(ds.train_counts.tolist()) == [39, 399]
    oracle, augment = kw["sources"]
    tail = int(ds.train_counts.argmin())
    assert len(oracle.pool(tail)) == 108 and augment == "augment"

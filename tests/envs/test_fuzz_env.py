"""Property-based fuzzing of the env's inputs: actions, seeds and configs.

Every case must either work (out-of-range actions are clipped: ratios stay in ``[0, max_ratio]`` and
observations inside ``observation_space``) or raise a clear ``ValueError`` (gymnasium's own ``Error`` for
seeds gymnasium refuses). After an error the env's state is unchanged and a valid step still works.

Each generated value carries the outcome the contract promises for it ("ok" with the expected number,
"bad", or "either" where both outcomes are defensible), so the tests check more than "no crash". The
envs are built once per module and reused; hypothesis runs derandomised, so CI sees the same cases.
The number of cases tried is reported as a ``FuzzReport`` warning in pytest's summary.
"""
from __future__ import annotations

import math
from collections import Counter

import gymnasium
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.sources import ArraySource
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
from tailmix.envs.vector import SyntheticRatioVectorEnv
from tests.conftest import make_tiny_dataset

C = 3
MAX_RATIO = 2.0
FAST = dict(encoder="random", pool_size=16, max_steps=4, max_ratio=MAX_RATIO)
from tests.envs.fuzzing import fuzz_settings, one_blas_thread, report  # noqa: F401 (autouse fixture)

FUZZ = fuzz_settings(150)


def _source(ds):
    """A cheap fixed source, so these tests do not depend on the augmentation generator."""
    return ArraySource({c: ds.train_images[ds.train_labels == c][:4] for c in range(ds.num_classes)}, ds.num_classes)


@pytest.fixture(scope="module")
def dataset():
    return make_tiny_dataset()


@pytest.fixture(scope="module")
def penv(dataset):
    return SyntheticRatioEnv(dataset=dataset, source=_source(dataset), **FAST)


@pytest.fixture(scope="module")
def cenv(dataset):
    return SyntheticRatioCentralEnv(dataset=dataset, source=_source(dataset), **FAST)


@pytest.fixture(scope="module")
def venv(dataset):
    # SAME_STEP: every step applies its actions (NEXT_STEP ignores them on the step after an episode's end)
    return SyntheticRatioVectorEnv(2, dataset=dataset, source=_source(dataset), autoreset_mode="same_step", **FAST)


def expected_ratio(a: float) -> float:
    return (min(max(a, -1.0), 1.0) + 1.0) / 2.0 * MAX_RATIO


# -- tagged values: (value, tag, number) where tag is "ok" (number is what it means), "bad" or "either" ----
finite64 = st.floats(allow_nan=False, allow_infinity=False)          # includes +-1.8e308 and subnormals
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])


def _tag_ok(value):
    return value, "ok", float(np.ravel(np.asarray(value, dtype=object))[0])


def ok(strategy, wrap):
    return strategy.map(lambda x: _tag_ok(wrap(x)))


ok_scalars = st.one_of(
    ok(finite32, lambda x: np.array([x], np.float32)),                # the documented form
    ok(finite64, lambda x: np.array([x], np.float64)),
    ok(finite64, float),
    ok(finite64, lambda x: [x]),
    ok(finite64, lambda x: np.array(x)),                              # 0-d array: accepted as a scalar
    ok(finite32, np.float32),
    ok(st.integers(-10**30, 10**30), int),                            # Python ints, also beyond int64
    ok(st.integers(-5, 5), lambda x: np.array([x], np.int64)),
    ok(st.integers(0, 255), lambda x: np.array([x], np.uint8)),
    ok(st.floats(width=16, allow_nan=False, allow_infinity=False), lambda x: np.array([x], np.float16)),
)
other_scalars = st.one_of(
    nonfinite.map(lambda x: (np.array([x], np.float32), "bad", None)),
    nonfinite.map(lambda x: (x, "bad", None)),
    nonfinite.map(lambda x: ([0.0, x][1:], "bad", None)),
    st.integers(10**309, 10**320).map(lambda x: (x, "bad", None)),   # too large for a float
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64]),
               hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3).filter(lambda s: s != (1,))
               ).map(lambda a: (a, "bad", None)),
    st.lists(finite64, min_size=2, max_size=4).map(lambda x: (x, "bad", None)),
    st.just(([], "bad", None)),
    st.just(([[0.5]], "bad", None)),                                   # shape (1, 1)
    st.just(([[0.5], [0.1, 0.2]], "bad", None)),                       # ragged
    st.text(max_size=4).map(lambda x: (x, "bad", None)),              # "0.5" is not a number
    st.binary(max_size=3).map(lambda x: (x, "bad", None)),
    st.complex_numbers(allow_nan=False, allow_infinity=False).map(lambda x: (x, "bad", None)),
    st.just((None, "bad", None)),
    st.just(({"a": 1}, "bad", None)),
    st.just((object(), "bad", None)),
    st.booleans().map(lambda x: (x, "either", None)),                 # a bool is an int in Python and numpy
    finite64.map(lambda x: (np.array([x], dtype=object), "either", None)),
)

odd_keys = st.one_of(st.text(max_size=8), st.integers(-3, 10), st.none(), st.tuples(st.integers()),
                     st.sampled_from(["class_3", "class_-1", "class_00", " class_0", "CLASS_0", "class_1.0"]))


@st.composite
def action_dicts(draw, agents):
    """A possibly broken ``{agent: action}`` dict, and whether the contract says it must work.

    Kinds, drawn explicitly so each is common: not a dict; all values valid; one agent's value broken
    (the others valid); agents missing or unknown; every value drawn freely.
    """
    kind = draw(st.sampled_from(["not_dict", "valid", "one_broken", "one_broken", "keys", "free"]))
    if kind == "not_dict":
        value = draw(st.one_of(st.lists(finite64, max_size=4), st.none(), st.just(np.zeros(C, np.float32)),
                               st.tuples(finite64, finite64, finite64), st.text(max_size=3)))
        return value, "bad", None
    broken = draw(st.sampled_from(agents)) if kind == "one_broken" else None
    actions, tags, numbers = {}, [], {}
    for a in agents:
        if kind == "keys" and draw(st.integers(0, 2)) == 0:
            tags.append("bad")  # missing agent
            continue
        if a == broken or (kind == "free" and draw(st.booleans())):
            value, tag, number = draw(other_scalars)
        else:
            value, tag, number = draw(ok_scalars)
        actions[a] = value
        tags.append(tag)
        numbers[a] = number
    if kind == "keys" or (kind == "free" and draw(st.integers(0, 3)) == 0):
        for key in draw(st.lists(odd_keys, min_size=0 if kind == "keys" else 1, max_size=2)):
            if key not in agents:
                actions[key] = np.zeros(1, np.float32)
                tags.append("bad")  # unknown agent
    tag = "bad" if "bad" in tags else ("either" if "either" in tags else "ok")
    return actions, tag, numbers


def assert_obs_valid(space: gymnasium.spaces.Box, obs) -> None:
    obs = np.asarray(obs)
    assert obs.dtype == np.float32 and np.isfinite(obs).all()
    assert space.contains(obs), (obs, space)


def snapshot(core) -> tuple:
    return (core.ratios.copy(), core.t.copy(), {k: v.copy() for k, v in core.metrics.items()},
            [p.clone() for p in core.engine.state_dict()["params"]])


def assert_same(before: tuple, after: tuple) -> None:
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    for k in before[2]:
        assert np.array_equal(before[2][k], after[2][k]), k
    for p, q in zip(before[3], after[3]):
        assert np.array_equal(p.numpy(), q.numpy())


def valid_parallel_step(env: SyntheticRatioEnv) -> None:
    if not env.agents:
        env.reset()
    obs, rew, term, trunc, infos = env.step({a: np.array([0.25], np.float32) for a in env.agents})
    for a, o in obs.items():
        assert_obs_valid(env.observation_space(a), o)
        assert math.isfinite(rew.get(a, 0.0))
    assert np.allclose(env.ratios, expected_ratio(0.25))


# -- PettingZoo parallel env ----------------------------------------------------------------------
def test_parallel_env_actions(penv):
    outcomes = Counter()

    @FUZZ
    @given(case=action_dicts(["class_0", "class_1", "class_2"]), reset_first=st.integers(0, 9))
    def run(case, reset_first):
        check_parallel_case(penv, case, reset_first, outcomes)

    run()
    report("parallel_actions", outcomes, 100)


def check_parallel_case(penv, case, reset_first, outcomes):
    actions, tag, numbers = case
    if reset_first == 0 or not penv.agents:
        penv.reset(seed=reset_first)
    before = snapshot(penv.core)
    try:
        obs, rew, term, trunc, infos = penv.step(actions)
    except ValueError as err:
        assert tag in ("bad", "either"), f"valid actions {actions!r} refused: {err}"
        assert str(err)
        assert_same(before, snapshot(penv.core))  # nothing was half-applied
        outcomes["ValueError"] += 1
    else:
        assert tag in ("ok", "either"), f"invalid actions {actions!r} accepted"
        ratios = penv.ratios
        assert ((ratios >= 0) & (ratios <= MAX_RATIO)).all()
        if tag == "ok":
            want = [expected_ratio(numbers[a]) for a in penv.possible_agents]
            assert np.allclose(ratios, want, rtol=1e-6, atol=1e-9), (actions, ratios, want)
            assert [infos[a]["ratio"] for a in penv.possible_agents] == pytest.approx(want)
        for a, o in obs.items():
            assert_obs_valid(penv.observation_space(a), o)
        assert all(math.isfinite(r) for r in rew.values())
        assert not any(term.values())
        outcomes["ok"] += 1
    valid_parallel_step(penv)  # the env is still usable


# -- gymnasium centralised view -------------------------------------------------------------------
vector_values = st.one_of(
    hnp.arrays(st.sampled_from([np.float32, np.float64]), (C,),
               elements=st.floats(allow_nan=False, allow_infinity=False, width=32)).map(lambda a: (a, "ok")),
    hnp.arrays(np.int64, (C,), elements=st.integers(-3, 3)).map(lambda a: (a, "ok")),
    st.lists(finite64, min_size=C, max_size=C).map(lambda a: (a, "ok")),
    hnp.arrays(np.float64, (C,), elements=st.floats()).map(
        lambda a: (a, "ok" if np.isfinite(a).all() else "bad")),
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)).map(
        lambda a: (a, "ok" if a.shape == (C,) else "bad")),
    hnp.arrays(np.complex64, (C,)).map(lambda a: (a, "bad")),
    hnp.arrays(np.bool_, (C,)).map(lambda a: (a, "either")),
    st.lists(finite64, max_size=5).filter(lambda x: len(x) != C).map(lambda a: (a, "bad")),
    st.one_of(st.none(), st.text(max_size=3), finite64, st.just({"a": 1}),
              st.just([[0.0] * C]), st.just([0.0, [0.1], 0.2])).map(lambda a: (a, "bad")),
)


def _as_floats(a) -> np.ndarray:
    return np.asarray(a, np.float64)


def test_central_env_actions(cenv):
    outcomes = Counter()

    @FUZZ
    @given(case=vector_values, reset_first=st.integers(0, 9))
    def run(case, reset_first):
        check_central_case(cenv, case, reset_first, outcomes)

    run()
    report("central_actions", outcomes, 100)


def check_central_case(cenv, case, reset_first, outcomes):
    action, tag = case
    if reset_first == 0 or cenv.core.done[0] or not cenv.core.started[0]:
        cenv.reset(seed=reset_first)
    before = snapshot(cenv.core)
    try:
        obs, rew, terminated, truncated, info = cenv.step(action)
    except ValueError as err:
        assert tag in ("bad", "either"), f"valid action {action!r} refused: {err}"
        assert_same(before, snapshot(cenv.core))
        outcomes["ValueError"] += 1
    else:
        assert tag in ("ok", "either"), f"invalid action {action!r} accepted"
        if tag == "ok":
            want = [expected_ratio(x) for x in _as_floats(action)]
            assert np.allclose(info["ratios"], want, rtol=1e-6, atol=1e-9)
        assert ((info["ratios"] >= 0) & (info["ratios"] <= MAX_RATIO)).all()
        assert_obs_valid(cenv.observation_space, obs)
        assert math.isfinite(rew) and terminated is False
        outcomes["ok"] += 1
    if cenv.core.done[0]:
        cenv.reset()
    obs, rew, *_ = cenv.step(np.zeros(C, np.float32))
    assert_obs_valid(cenv.observation_space, obs)


# -- batched vector env ---------------------------------------------------------------------------
batched_values = st.one_of(
    hnp.arrays(np.float32, (2, C), elements=st.floats(allow_nan=False, allow_infinity=False, width=32)).map(
        lambda a: (a, "ok")),
    hnp.arrays(np.float64, (2, C), elements=st.floats()).map(lambda a: (a, "ok" if np.isfinite(a).all() else "bad")),
    hnp.arrays(st.sampled_from([np.float32, np.int64]), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)).map(
        lambda a: (a, "ok" if a.shape == (2, C) else "bad")),
    st.lists(st.lists(finite64, min_size=C, max_size=C), min_size=2, max_size=2).map(lambda a: (a, "ok")),
    st.one_of(st.none(), st.text(max_size=3), st.just([[0.0] * C, [0.0]]), hnp.arrays(np.complex128, (2, C))
              ).map(lambda a: (a, "bad")),
)


def test_vector_env_actions(venv):
    outcomes = Counter()

    @FUZZ
    @given(case=batched_values)
    def run(case):
        check_vector_case(venv, case, outcomes)

    run()
    report("vector_actions", outcomes, 100)


def check_vector_case(venv, case, outcomes):
    action, tag = case
    if not venv.core.started.all():
        venv.reset(seed=0)
    before = snapshot(venv.core)
    try:
        obs, rew, term, trunc, info = venv.step(action)
    except ValueError:
        assert tag == "bad", f"valid actions {action!r} refused"
        assert_same(before, snapshot(venv.core))
        outcomes["ValueError"] += 1
    else:
        assert tag == "ok", f"invalid actions {action!r} accepted"
        want = np.vectorize(expected_ratio)(_as_floats(action))
        step_info = info["final_info"] if trunc.any() else info  # SAME_STEP: the ended step's infos (gymnasium's)
        assert np.allclose(step_info["ratios"], want, rtol=1e-6, atol=1e-9)  # the step's ratios, before autoreset
        assert ((venv.core.ratios >= 0) & (venv.core.ratios <= MAX_RATIO)).all()
        assert venv.observation_space.contains(obs) and np.isfinite(obs).all()
        assert np.isfinite(rew).all() and not term.any()
        outcomes["ok"] += 1
    obs, *_ = venv.step(np.zeros((2, C), np.float32))
    assert venv.observation_space.contains(obs)


# -- seeds ----------------------------------------------------------------------------------------
seed_values = st.one_of(
    st.none(), st.integers(0, 2**64), st.integers(-10, -1), st.floats(allow_nan=True), st.text(max_size=3),
    st.lists(st.one_of(st.none(), st.integers(-2, 2**40)), max_size=3), st.just(np.int64(3)),
    st.just(np.array([1, 2])), st.just(True),
)


def _seed_is_valid(seed, n_copies: int | None) -> bool:
    def one(s):
        return s is None or (isinstance(s, int) and s >= 0)

    if n_copies is None:  # single envs: gymnasium's rule (a Python int >= 0, or None)
        return one(seed)
    if seed is None or (isinstance(seed, (int, np.integer)) and seed >= 0):
        return True
    if isinstance(seed, (list, np.ndarray)):
        return len(seed) == n_copies and all(one(int(s) if isinstance(s, np.integer) else s) for s in seed)
    return False


def test_reset_seeds(penv, cenv, venv):
    outcomes = Counter()

    @FUZZ
    @given(seed=seed_values, which=st.sampled_from(["parallel", "central", "vector"]))
    def run(seed, which):
        check_seed_case(penv, cenv, venv, seed, which, outcomes)

    run()
    report("reset_seeds", outcomes, 100)


def check_seed_case(penv, cenv, venv, seed, which, outcomes):
    env = {"parallel": penv, "central": cenv, "vector": venv}[which]
    valid = _seed_is_valid(seed, 2 if which == "vector" else None)
    env.reset(seed=1)
    before = snapshot(env.core)
    try:
        obs, info = env.reset(seed=seed)
    except (ValueError, gymnasium.error.Error) as err:
        assert not valid, f"{which}.reset(seed={seed!r}) refused: {err!r}"
        assert_same(before, snapshot(env.core))  # no copy was half-reset
        outcomes[type(err).__name__] += 1
    else:
        assert valid, f"{which}.reset(seed={seed!r}) accepted"
        outcomes["ok"] += 1
    if which == "parallel":
        valid_parallel_step(penv)
    elif which == "central":
        assert_obs_valid(cenv.observation_space, cenv.step(np.zeros(C))[0])
    else:
        assert venv.observation_space.contains(venv.step(np.zeros((2, C)))[0])


def test_same_seed_after_errors_same_trajectory(dataset):
    """Errors in between must not consume randomness: the trajectory equals an error-free one."""
    def run(with_errors: bool):
        e = SyntheticRatioEnv(dataset=dataset, source=_source(dataset), **FAST)
        out = [e.reset(seed=5)[0]]
        rng = np.random.default_rng(0)
        while e.agents:
            if with_errors:
                for bad in ({"class_0": np.zeros(1)}, {a: np.array([np.nan]) for a in e.agents}):
                    with pytest.raises(ValueError):
                        e.step(bad)
                with pytest.raises(gymnasium.error.Error):
                    e.reset(seed=-1)
            out.append(e.step({a: rng.uniform(-1, 1, 1) for a in e.agents})[0])
        return out

    from gymnasium.utils.env_checker import data_equivalence

    assert data_equivalence(run(False), run(True))


# -- configs --------------------------------------------------------------------------------------
FEATURE_LOSSES = ("ce", "logit_adjustment", "balanced_softmax", "class_balanced")
VALID = {  # values every one of which must give a working env (whatever the other valid fields are)
    "max_steps": st.one_of(st.integers(1, 4), st.just(np.int64(2))),
    "max_ratio": st.one_of(st.floats(1, 8), st.sampled_from([3, np.float32(2.5)])),
    "initial_ratio": st.floats(0, 1),
    "reward": st.sampled_from(["accuracy", "delta", "final"]),
    "synthetic_cost": st.one_of(st.floats(0, 2), st.just(0)),
    "eval_split": st.sampled_from([None, "test"]),
    "epochs_per_step": st.one_of(st.none(), st.integers(1, 3), st.just(np.int64(2))),
    "head": st.sampled_from(["linear", "mlp"]),
    "hidden": st.integers(1, 16),
    "lr": st.one_of(st.none(), st.floats(1e-4, 1), st.just(1e30)),  # 1e30 diverges: rolled back, still valid
    "encoder": st.sampled_from(["random", "random", "supervised", "crossfit", "crossfit_aligned"]),
    "encoder_folds": st.sampled_from([2, 3]),
    "batch_size": st.integers(2, 70),
    "pool_size": st.integers(1, 20),
    "source_seed": st.sampled_from([0, 1]),
    "num_threads": st.sampled_from([None, 1]),  # (2 threads on a busy 2-core CI runner thrash: seconds per step)
    "device": st.sampled_from(["cpu", "auto", "cpu:0"]),
    "max_cycles": st.one_of(st.none(), st.integers(1, 3)),
    # any other mode is accepted with a warning and rendering off (gymnasium's convention; SB3 asks for rgb_array)
    "render_mode": st.sampled_from([None, "ansi", "human", "rgb_array"]),
}
INVALID = {  # values any one of which must give a ValueError when the env is built
    "mode": st.sampled_from(["gpu", "", None, 1, "Feature"]),
    "max_steps": st.sampled_from([0, -1, 2.0, None, "3", True]),
    "max_ratio": st.sampled_from([0.0, -1.0, math.nan, math.inf, 1e300, "2", None]),
    "initial_ratio": st.sampled_from([-0.5, math.nan, "0", None, 1e6]),
    "reward": st.sampled_from(["f1", None, "Accuracy"]),
    "synthetic_cost": st.sampled_from([-1.0, math.nan, math.inf, "a", None]),
    "eval_split": st.sampled_from(["val", "train", ""]),
    "epochs_per_step": st.sampled_from([0, -1, 1.5, "2"]),
    "head": st.sampled_from(["cnn", None]),
    "hidden": st.sampled_from([0, -1, 2.5, None]),
    "lr": st.sampled_from([0.0, -0.1, math.nan, math.inf, "0.1"]),
    "loss": st.sampled_from(["mse", None, "CE"]),
    "encoder": st.sampled_from(["imagenet", None]),
    "encoder_epochs": st.sampled_from([0, -1, 1.0]),
    "encoder_folds": st.sampled_from([0, 2.0, None]),
    "batch_size": st.sampled_from([0, -1, None, 8.0]),
    "pool_size": st.sampled_from([0, -1, "a", None]),
    "source_seed": st.sampled_from([-1, "x", None]),
    "num_threads": st.sampled_from([0, -1, True, 1.5]),
    "device": st.sampled_from(["cuda:99", "tpu", "", None, "cuda:-1"]),
    "max_cycles": st.sampled_from([0, -1]),
    "source": st.sampled_from(["diffusion", "object", "wrong_classes"]),
}


@st.composite
def configs(draw):
    """``(kwargs, source kind, names of the fields set to invalid values)``."""
    mode = draw(st.sampled_from(["feature", "feature", "pixel"]))
    cfg = {"mode": mode, "encoder_epochs": 1, "pool_size": 8, "max_steps": 2}  # fast defaults, may be overridden
    if mode == "pixel":
        cfg["epochs_per_step"] = 1
    for name, strategy in VALID.items():
        if draw(st.integers(0, 2)) == 0:
            cfg[name] = draw(strategy)
    cfg.setdefault("encoder", "random")
    if mode == "pixel":  # a pixel step trains a CNN: keep it to one epoch so the test stays fast
        cfg["epochs_per_step"] = 1
    if cfg["encoder"] == "crossfit_aligned":
        cfg["encoder_folds"] = 3  # it needs images two fold models both saw
    losses = FEATURE_LOSSES + (("focal", "ldam_drw") if mode == "pixel" else ())
    if draw(st.booleans()):
        cfg["loss"] = draw(st.sampled_from(losses))
    source = draw(st.sampled_from(["array", "array", "partial", None] + (["gaussian"] if mode == "feature" else [])))
    bad = draw(st.lists(st.sampled_from(sorted(INVALID)), min_size=1, max_size=2, unique=True)) \
        if draw(st.booleans()) else []
    for name in bad:
        if name == "source":
            source = draw(INVALID["source"])
        else:
            cfg[name] = draw(INVALID[name])
    return cfg, source, bad


def _make_source(kind, ds):
    if kind == "array":
        return _source(ds)
    if kind == "partial":  # class 2 has no synthetic pool: asking for its samples is a (step-time) ValueError
        return ArraySource({0: ds.train_images[:3], 1: ds.train_images[:3]}, ds.num_classes)
    if kind == "wrong_classes":
        return ArraySource({0: ds.train_images[:3]}, ds.num_classes + 1)
    if kind == "object":
        return object()
    return kind  # None (augmentations), "gaussian", or an unknown string


def test_random_configs(dataset):
    outcomes = Counter()

    @settings(FUZZ, max_examples=100)
    @given(case=configs(), actions=st.lists(
        hnp.arrays(np.float32, (C,), elements=st.floats(-2, 2, width=32)), min_size=1, max_size=3))
    def run(case, actions):
        check_config_case(dataset, *case, actions, outcomes)

    run()
    report("configs", outcomes, 75)
    assert outcomes["ok"] >= 25 and outcomes["ValueError"] >= 25, outcomes  # both branches exercised


def check_config_case(dataset, cfg, source_kind, bad, actions, outcomes):
    source = _make_source(source_kind, dataset)
    if bad:
        with pytest.raises(ValueError) as info:
            SyntheticRatioEnv(dataset=dataset, source=source, **cfg)
        assert len(str(info.value)) > 20
        outcomes["ValueError"] += 1
        return
    env = SyntheticRatioEnv(dataset=dataset, source=source, **cfg)
    obs, _ = env.reset(seed=0)
    for a in actions:
        if not env.agents:
            obs, _ = env.reset()
        step = {k: a[i:i + 1] for i, k in enumerate(env.possible_agents)}
        if source_kind == "partial" and env.action_to_ratio(a[2]) * env.train_counts[2] >= 0.5:
            with pytest.raises(ValueError, match="class 2"):
                env.step(step)
            step["class_2"] = -np.ones(1)
        obs, rew, term, trunc, infos = env.step(step)
        assert all(math.isfinite(r) for r in rew.values())
        for k in env.possible_agents:
            assert 0.0 <= infos[k]["ratio"] <= env.max_ratio
            assert infos[k]["ratio"] == pytest.approx(float(env.action_to_ratio(step[k][0])))
        if env.render_mode == "ansi":
            assert isinstance(env.render(), str)
        for k, o in obs.items():
            assert_obs_valid(env.observation_space(k), o)
    outcomes["ok"] += 1


def test_unknown_keyword_is_a_type_error_naming_it(dataset):
    """A misspelt keyword gets Python's usual TypeError, which names it (SB3 and gymnasium do the same)."""
    with pytest.raises(TypeError, match="max_step"):
        SyntheticRatioEnv(dataset=dataset, max_step=3)


@pytest.mark.parametrize("kw,msg", [(dict(max_ratio=1e12), "max_ratio"), (dict(lr=math.nan), "lr"),
                                    (dict(epochs_per_step=2.5), "epochs_per_step"), (dict(hidden=-1), "hidden"),
                                    (dict(synthetic_cost="a"), "synthetic_cost"), (dict(device="cuda:7"), "cuda"),
                                    (dict(mode="pixel", loss="mse"), "loss"), (dict(source_seed=-1), "source_seed"),
                                    (dict(encoder="crossfit_aligned", encoder_folds=2), "folds >= 3")])
def test_config_errors_name_the_field(dataset, kw, msg):
    with pytest.raises(ValueError, match=msg):
        SyntheticRatioEnv(dataset=dataset, source=_source(dataset), **{**FAST, **kw})


def test_device_auto_resolves(dataset):
    e = SyntheticRatioEnv(dataset=dataset, source=_source(dataset), **{**FAST, "device": "auto"})
    e.reset(seed=0)
    e.step({a: np.zeros(1) for a in e.agents})


def test_empty_pool_error_leaves_state_unchanged(dataset):
    e = SyntheticRatioEnv(dataset=dataset, source=_make_source("partial", dataset), **FAST)
    e.reset(seed=0)
    before = snapshot(e.core)
    with pytest.raises(ValueError, match="class 2"):
        e.step({a: np.ones(1) for a in e.agents})
    assert_same(before, snapshot(e.core))  # ratios used to be overwritten before the error


def test_aec_env_recovers_from_a_bad_action(dataset):
    """In the AEC form the bad action surfaces when the last agent acts; that agent may then act again."""
    from tailmix.envs.synthetic_ratio import env as aec_env

    e = aec_env(dataset=dataset, source=_source(dataset), **FAST)
    e.reset(seed=0)
    e.step(np.zeros(1, np.float32))
    e.step(np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="class_2"):
        e.step(np.array([np.nan], np.float32))
    assert e.agent_selection == "class_2"
    e.step(np.zeros(1, np.float32))
    assert e.agent_selection == "class_0" and all(math.isfinite(r) for r in e.rewards.values())
    assert np.isfinite(e.observe("class_0")).all()

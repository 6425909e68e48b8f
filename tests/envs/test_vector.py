"""The batched vector env: each copy equals a single env with the same seed and actions, in both autoreset modes;
a first-class gymnasium vector env (``make_vec``'s vector entry point, gymnasium's vector wrappers)."""
from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from tailmix.envs import CENTRAL_ID, CENTRAL_V1_ID
from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.core import CLASS_INFO_KEYS
from tailmix.envs.vector import SyntheticRatioVectorEnv
from tests.conftest import make_tiny_dataset
from tests.envs.test_synthetic_ratio import TINY


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_each_copy_follows_the_single_env_trajectory(head):
    """SAME_STEP: the episode's last observations and infos come in ``final_obs`` and ``final_info`` (as in
    gymnasium's SyncVectorEnv), the returned ones start the next."""
    ds = make_tiny_dataset()
    k = 3
    venv = SyntheticRatioVectorEnv(k, dataset=ds, head=head, autoreset_mode=AutoresetMode.SAME_STEP, **TINY)
    singles = [SyntheticRatioCentralEnv(dataset=ds, head=head, **TINY) for _ in range(k)]
    seeds = [11, 12, 40]
    vobs, _ = venv.reset(seed=seeds)
    sobs = [e.reset(seed=s)[0] for e, s in zip(singles, seeds)]
    rng = np.random.default_rng(0)
    for t in range(TINY["max_steps"]):
        for i in range(k):
            assert np.allclose(vobs[i], sobs[i], atol=1e-5)
        acts = rng.uniform(-1, 1, (k, 3)).astype(np.float32)
        vobs, vrew, _, vtrunc, vinfo = venv.step(acts)
        outs = [e.step(acts[i]) for i, e in enumerate(singles)]
        for i, (o, r, _, tr, info) in enumerate(outs):
            assert vrew[i] == pytest.approx(r, abs=1e-5)
            assert vtrunc[i] == tr
            step_info = vinfo["final_info"] if tr else vinfo
            assert np.array_equal(step_info["n_synthetic"][i], info["n_synthetic"])
            sobs[i] = o
    assert vinfo["_final_obs"].all() and (vinfo["step"] == 0).all()  # the infos of the new episodes' reset
    assert np.allclose(np.stack(vinfo["final_obs"]), np.stack(sobs), atol=1e-5)
    # the next episode (seed None) continues each copy's stream, as the single env's reset() does
    sobs = [e.reset()[0] for e in singles]
    assert np.allclose(vobs, np.stack(sobs), atol=1e-5)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_each_copy_follows_the_single_env_trajectory_next_step(head):
    """NEXT_STEP (the default): the last step returns the last observations; the next ``step()`` resets."""
    ds = make_tiny_dataset()
    k = 3
    venv = SyntheticRatioVectorEnv(k, dataset=ds, head=head, **TINY)
    assert venv.autoreset_mode == AutoresetMode.NEXT_STEP == venv.metadata["autoreset_mode"]
    singles = [SyntheticRatioCentralEnv(dataset=ds, head=head, **TINY) for _ in range(k)]
    seeds = [11, 12, 40]
    vobs, _ = venv.reset(seed=seeds)
    sobs = [e.reset(seed=s)[0] for e, s in zip(singles, seeds)]
    rng = np.random.default_rng(0)
    for episode in range(2):
        for t in range(TINY["max_steps"]):
            assert np.allclose(vobs, np.stack(sobs), atol=1e-5)
            acts = rng.uniform(-1, 1, (k, 3)).astype(np.float32)
            vobs, vrew, vterm, vtrunc, vinfo = venv.step(acts)
            for i, e in enumerate(singles):
                o, r, _, tr, info = e.step(acts[i])
                assert vrew[i] == pytest.approx(r, abs=1e-5) and vtrunc[i] == tr and not vterm[i]
                assert np.array_equal(vinfo["n_synthetic"][i], info["n_synthetic"])
                sobs[i] = o
        assert vtrunc.all() and "final_obs" not in vinfo
        assert np.allclose(vobs, np.stack(sobs), atol=1e-5)  # the last observations themselves
        # the autoreset step: actions ignored, reward 0, nothing ended, the new episode's first observations
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(np.ones((k, 3), np.float32))
        sobs = [e.reset()[0] for e in singles]
        assert not vterm.any() and not vtrunc.any() and (vrew == 0).all()
        assert (vinfo["step"] == 0).all() and (vinfo["n_synthetic"] == 0).all()
        assert np.allclose(vobs, np.stack(sobs), atol=1e-5)


def test_autoreset_mode_is_checked():
    # DISABLED was refused here until TorchRL's GymWrapper needed it (it refuses NEXT_STEP); an unknown mode still is
    with pytest.raises(ValueError, match="autoreset_mode"):
        SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), autoreset_mode="sometimes", **TINY)
    v = SyntheticRatioVectorEnv(1, dataset=make_tiny_dataset(), autoreset_mode="SameStep", **TINY)
    assert v.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert SyntheticRatioVectorEnv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP  # the class is untouched


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_infos_are_numbers_and_arrays_with_the_copies_first(mode):
    venv = SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), autoreset_mode=mode, **TINY)
    _, infos = venv.reset(seed=0)
    for _ in range(TINY["max_steps"]):
        _, _, _, _, step_infos = venv.step(np.zeros((2, 3), np.float32))
        if "final_info" in step_infos:  # SAME_STEP's last step: gymnasium's keys, per copy
            assert step_infos["final_obs"].dtype == object and step_infos["_final_info"].all()
            step_infos = step_infos["final_info"]
        for key, v in step_infos.items():
            assert isinstance(v, np.ndarray) and v.dtype != object and v.shape[0] == 2, key
            if key in CLASS_INFO_KEYS:
                assert v.shape[1] == 3, key
            assert key.startswith("_") or step_infos[f"_{key}"].all(), key  # SyncVectorEnv's masks
    assert set(infos) <= set(step_infos)
    assert venv.class_names == ("c0", "c1", "c2")
    named = venv.per_class_info(1)
    assert [p["class_name"] for p in named] == ["c0", "c1", "c2"]
    assert named[2]["recall"] == pytest.approx(float(venv.core.metrics["recall"][1, 2]))


@pytest.mark.parametrize("env_id", [CENTRAL_ID, CENTRAL_V1_ID])
def test_make_vec_vector_entry_point(env_id):
    venv = gymnasium.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point",
                              dataset=make_tiny_dataset(), **TINY)
    assert isinstance(venv, SyntheticRatioVectorEnv) and venv.num_envs == 2
    assert venv.config.draw == ("unique" if env_id == CENTRAL_V1_ID else "replace")
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (2, 3, venv.core.obs_dim)


def test_gymnasium_vector_wrappers():
    from gymnasium.wrappers.vector import (ClipAction, FlattenObservation, NormalizeObservation, NormalizeReward,
                                           RecordEpisodeStatistics)

    base = SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), **TINY)
    env = RecordEpisodeStatistics(NormalizeReward(NormalizeObservation(FlattenObservation(ClipAction(base)))))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 3 * base.core.obs_dim)
    episodes = 0
    for t in range(2 * (TINY["max_steps"] + 1)):
        obs, rew, term, trunc, infos = env.step(np.full((2, 3), 5.0, np.float32))  # clipped to 1
        if t == 0:
            assert (base.core.ratios == base.config.max_ratio).all()  # the clipped action is the top ratio
        assert np.isfinite(obs).all() and np.isfinite(rew).all()
        if "episode" in infos:
            episodes += int(infos["_episode"].sum())
            assert (infos["episode"]["l"][infos["_episode"]] == TINY["max_steps"]).all()
    assert episodes == 4


def test_bad_actions_are_refused():
    # pixel mode is accepted (one grouped CNN for the copies): tests/envs/test_pixel_batched.py
    venv = SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), **TINY)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        venv.step(np.full((2, 3), np.nan))


def test_cosine_lr_schedule_copies_follow_the_single_env_and_constant_is_the_default():
    from tailmix.envs.config import RatioEnvConfig

    assert RatioEnvConfig().lr_schedule == "constant"
    with pytest.raises(ValueError, match="lr_schedule"):
        RatioEnvConfig(lr_schedule="step")
    ds = make_tiny_dataset()
    k = 2
    venv = SyntheticRatioVectorEnv(k, dataset=ds, lr_schedule="cosine", autoreset_mode="same_step", **TINY)
    singles = [SyntheticRatioCentralEnv(dataset=ds, lr_schedule="cosine", **TINY) for _ in range(k)]
    const = SyntheticRatioCentralEnv(dataset=ds, **TINY)
    head = venv.core.engine.head
    assert head.lr_schedule == "cosine" and head.total_steps == TINY["max_steps"] * venv.config.epochs
    seeds = [3, 9]
    vobs, _ = venv.reset(seed=seeds)
    for e, s in zip(singles, seeds):
        e.reset(seed=s)
    const.reset(seed=seeds[0])
    rng = np.random.default_rng(1)
    for t in range(TINY["max_steps"]):
        acts = rng.uniform(-1, 1, (k, 3)).astype(np.float32)
        vobs, vrew, _, _, vinfo = venv.step(acts)
        outs = [e.step(acts[i]) for i, e in enumerate(singles)]
        const.step(acts[0])
        last = t == TINY["max_steps"] - 1  # the vector env autoresets: the last observation is in final_obs
        for i, (o, r, *_rest) in enumerate(outs):
            assert vrew[i] == pytest.approx(r, abs=1e-5)
            assert np.allclose(vinfo["final_obs"][i] if last else vobs[i], o, atol=1e-5)
    # the episode's rate has decayed to ~0 by its end (the autoreset copies are back at lr); the constant env's
    # has not, and its head differs
    assert head.learning_rates() == [venv.config.learning_rate] * k
    assert singles[0].core.engine.head.learning_rates()[0] < 1e-3 * venv.config.learning_rate
    assert const.core.engine.head.learning_rates() == [venv.config.learning_rate]
    assert not np.allclose(singles[0].core.engine.head.flat.numpy(), const.core.engine.head.flat.numpy())


def test_single_views_infos_are_numbers_and_names_are_attributes():
    """Issue: infos every framework can batch. The parallel view's agent infos and the central view's info hold
    numbers and arrays only (slices of the core's), and the names moved to ``class_names``/``per_class_info``."""
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

    par = SyntheticRatioEnv(dataset=make_tiny_dataset(), **TINY)
    cen = SyntheticRatioCentralEnv(dataset=make_tiny_dataset(), **TINY)
    _, pinfos = par.reset(seed=5)
    _, cinfo = cen.reset(seed=5)
    for _ in range(2):
        _, _, _, _, pinfos = par.step({a: np.full(1, 0.3, np.float32) for a in par.agents})
        _, _, _, _, cinfo = cen.step(np.full(3, 0.3, np.float32))

    def numeric(v):
        return isinstance(v, (bool, int, float, np.number)) or (isinstance(v, np.ndarray) and v.dtype != object)

    for info in (*pinfos.values(), cinfo):
        assert all(numeric(v) for v in info.values()), info
    # the central env's per-copy numbers are numpy scalars: TorchRL's info reader takes numpy values only
    assert all(isinstance(v, (np.number, np.ndarray)) for v in cinfo.values()), cinfo
    for i, a in enumerate(par.possible_agents):  # the same core slice in both views
        assert pinfos[a]["ratio"] == pytest.approx(cinfo["ratios"][i])
        assert pinfos[a]["recall"] == pytest.approx(cinfo["recall"][i])
        assert np.array_equal(pinfos[a]["source_counts"], cinfo["source_counts"][i])
    assert par.class_names == cen.class_names == ("c0", "c1", "c2")
    named = cen.per_class_info()
    assert [p["class_name"] for p in named] == ["c0", "c1", "c2"]
    assert {k: v for k, v in named[1].items() if k != "class_name"}.keys() == pinfos["class_1"].keys()
    assert named[1]["n_synthetic"] == pinfos["class_1"]["n_synthetic"] == int(cinfo["n_synthetic"][1])


def test_disabled_autoreset_restarts_only_the_masked_copies():
    """DISABLED (gymnasium's partial reset, TorchRL's preferred mode): no autoreset; stepping an ended copy raises;
    ``reset(options={"reset_mask": m})`` restarts the masked copies, each as a single env's reset() would."""
    ds = make_tiny_dataset()
    k = 3
    venv = SyntheticRatioVectorEnv(k, dataset=ds, autoreset_mode="disabled", **TINY)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    singles = [SyntheticRatioCentralEnv(dataset=ds, **TINY) for _ in range(k)]
    vobs, _ = venv.reset(seed=7)
    sobs = [e.reset(seed=7 + i)[0] for i, e in enumerate(singles)]
    rng = np.random.default_rng(0)

    def step_all():
        acts = rng.uniform(-1, 1, (k, 3)).astype(np.float32)
        out = venv.step(acts)
        for i, e in enumerate(singles):
            o, r, _, tr, _ = e.step(acts[i])
            assert out[1][i] == pytest.approx(r, abs=1e-5) and out[3][i] == tr
            sobs[i] = o
        assert np.allclose(out[0], np.stack(sobs), atol=1e-5)
        return out

    for _ in range(TINY["max_steps"]):
        vobs, _, _, vtrunc, vinfo = step_all()
    assert vtrunc.all() and "final_obs" not in vinfo and (vinfo["step"] == TINY["max_steps"]).all()
    with pytest.raises(RuntimeError, match="reset_mask"):
        venv.step(np.zeros((k, 3), np.float32))
    # restart copies 0 and 2 (copy 1 stays ended: stepping still raises), then copy 1 with its own seed
    vobs, infos = venv.reset(options={"reset_mask": np.array([True, False, True])})
    sobs[0], sobs[2] = singles[0].reset()[0], singles[2].reset()[0]
    assert np.allclose(vobs, np.stack(sobs), atol=1e-5) and infos["step"].tolist() == [0, TINY["max_steps"], 0]
    with pytest.raises(RuntimeError, match=r"copies \[1\]"):
        venv.step(np.zeros((k, 3), np.float32))
    vobs, _ = venv.reset(seed=[None, 99, None], options={"reset_mask": np.array([False, True, False])})
    sobs[1] = singles[1].reset(seed=99)[0]
    assert np.allclose(vobs, np.stack(sobs), atol=1e-5)
    step_all()
    for bad in (np.array([1, 0, 1]), np.zeros(k, bool), np.ones(k + 1, bool)):
        with pytest.raises(ValueError, match="reset_mask"):
            venv.reset(options={"reset_mask": bad})


def _same_batched_infos(ours: dict, sync: dict, path: str = "") -> None:
    """The same keys (``_<key>`` masks included), types, dtypes and shapes; the same values (float: to 1e-5)."""
    assert sorted(ours) == sorted(sync), (path, sorted(set(ours) ^ set(sync)))
    for key, a in ours.items():
        b, where = sync[key], path + key
        if isinstance(b, dict):
            assert isinstance(a, dict), where
            _same_batched_infos(a, b, where + ".")
            continue
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape, (where, a, b)
        if a.dtype == object:  # final_obs, and the test report's lists
            for u, v in zip(a, b):
                assert (u is None) == (v is None), where
                assert u is None or np.allclose(np.asarray(u, float), np.asarray(v, float), atol=1e-5), where
        elif a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=where)
        else:
            assert np.array_equal(a, b), (where, a, b)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_infos_are_shaped_as_sync_vector_envs_give_them(mode):
    """Code moves between ``make_vec(..., "sync")`` and the ``vector_entry_point`` unchanged: ``_key`` masks, no
    extra keys, the test report a masked dict, ``SAME_STEP``'s ``final_obs`` / ``final_info``."""
    kw = dict(dataset=make_tiny_dataset(), eval_split="test", **TINY)
    ours = gymnasium.make_vec(CENTRAL_ID, num_envs=2, vectorization_mode="vector_entry_point", autoreset_mode=mode,
                              **kw)
    sync = gymnasium.make_vec(CENTRAL_ID, num_envs=2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode},
                              **kw)
    assert ours.metadata["render_fps"] == sync.metadata["render_fps"]
    assert ours.observation_columns == sync.envs[0].unwrapped.observation_columns  # on every view, as PettingZoo's
    assert len(ours.observation_columns) == ours.single_observation_space.shape[-1]
    (obs_a, info_a), (obs_b, info_b) = ours.reset(seed=[5, 6]), sync.reset(seed=[5, 6])
    _same_batched_infos(info_a, info_b)
    rng = np.random.default_rng(0)
    reports = 0
    for _ in range(TINY["max_steps"] + 1):  # the last step, then NEXT_STEP's autoreset step
        action = rng.uniform(-1, 1, (2, 3)).astype(np.float32)
        *out_a, info_a = ours.step(action)
        *out_b, info_b = sync.step(action)
        for a, b in zip(out_a, out_b):
            np.testing.assert_allclose(a, b, atol=1e-5)
        _same_batched_infos(info_a, info_b)
        reports += "test" in info_b or "test" in info_b.get("final_info", {})
    assert reports == 1  # the episode's end was compared, test report included


def test_step_arrays_leaves_next_step_autoresets_to_step():
    venv = SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), **{**TINY, "max_steps": 1})
    venv.reset(seed=0)
    out = venv.step_arrays(np.zeros((2, 3), np.float32))
    assert out["truncated"].all() and out["final_obs"] is None and out["reset_infos"] is None
    with pytest.raises(RuntimeError, match="step_arrays"):
        venv.step_arrays(np.zeros((2, 3), np.float32))
    _, reward, _, truncated, _ = venv.step(np.zeros((2, 3), np.float32))  # the autoreset step
    assert not truncated.any() and (reward == 0).all()

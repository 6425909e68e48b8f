"""Train Stable-Baselines3 agents on the env: seeded, TensorBoard-logged, checkpointed and resumable.

A CLI is a thin layer over :func:`train` and :func:`load_model`. Run folder layout (``log_dir``)::

    tb/<ALGO>_<n>/          TensorBoard events (SB3 scalars + tailmix/* from agents.callbacks)
    checkpoints/<algo>_<steps>_steps.zip  (+ <algo>_replay_buffer_<steps>_steps.pkl for sac/td3)
    model.zip               the final model, loadable with SB3's own ``PPO.load`` etc.
    agent.json              algo, wrapper, seed, timesteps (so a model can be loaded without knowing them)

Defaults (:func:`default_algo_kwargs`, overridden by ``algo_kwargs``):

- PPO and A2C: ``policy_kwargs={"log_std_init": -1.0}``. A Gaussian policy's actions are clipped to
  ``[-1, 1]``; with SB3's default ``log_std_init=0`` (std 1) much of the mass lands beyond the bound and the
  clipped mean is biased inwards, and PPO drifted to high ratios when the optimum sat at the action bound.
  A smaller initial std keeps the clipped mean near the policy mean.
- PPO: ``n_steps`` small enough that tiny runs still update (``clip(total_timesteps // slots, 8, 128)`` per
  slot), ``batch_size`` the largest divisor of the rollout size up to 64.
- SAC and TD3: ``learning_starts = min(100, total_timesteps // 4)`` and a replay buffer no larger than the run
  (at most 100k), so short runs learn and do not allocate SB3's default 1M-transition buffer.
  TD3 gets Gaussian exploration noise (std 0.1), which SB3 does not add by default.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from tailmix.agents.backends import Backend, write_json_atomic

ALGORITHMS = ("ppo", "sac", "a2c", "td3")
OFF_POLICY = ("sac", "td3")


def algorithm_class(algo: str):
    """The SB3 class of ``algo`` (one of :data:`ALGORITHMS`)."""
    import stable_baselines3 as sb3

    if not isinstance(algo, str) or algo.lower() not in ALGORITHMS:
        raise ValueError(f"unknown algo {algo!r}; choose one of {ALGORITHMS}")
    return getattr(sb3, algo.upper())


def default_algo_kwargs(algo: str, num_slots: int, total_timesteps: int) -> dict:
    """Our defaults for ``algo`` given the number of vec-env slots and the run length (see module docs)."""
    algorithm_class(algo)
    algo = algo.lower()
    if algo == "ppo":
        n_steps = int(min(128, max(8, total_timesteps // max(num_slots, 1))))
        return {"n_steps": n_steps, "batch_size": _batch_size(n_steps * num_slots),
                "policy_kwargs": {"log_std_init": -1.0}}
    if algo == "a2c":
        return {"policy_kwargs": {"log_std_init": -1.0}}
    kw = {"learning_starts": int(min(100, total_timesteps // 4)),
          "buffer_size": int(min(100_000, max(1_000, total_timesteps)))}
    if algo == "td3":
        kw["action_noise"] = "normal:0.1"  # resolved in _resolve_action_noise (needs the action shape)
    return kw


def make_model(algo: str, env, total_timesteps: int, *, seed: int | None = 0, algo_kwargs: dict | None = None,
               **kwargs):
    """An SB3 model of ``algo`` on ``env`` with :func:`default_algo_kwargs` for a run of ``total_timesteps``.

    SB3's own defaults do not look at the run length: ``PPO("MlpPolicy", venv)`` collects ``n_steps=2048`` per slot
    before its first update and ends ``learn`` only after a full rollout, so ``learn(2_000)`` on 4 copies of a
    10-class shared env (40 slots) runs 81,920 transitions. Here PPO's rollout fits the run:
    ``make_model("ppo", venv, 2_000).learn(2_000)`` runs 2,000.

    Args:
        algo: One of :data:`ALGORITHMS`.
        env: An SB3 ``VecEnv`` (e.g. ``agents.wrappers.make_vec_env``) or a gymnasium env.
        total_timesteps: The transitions the model will be trained for (what ``learn`` is then given).
        seed: The model's seed.
        algo_kwargs: Overrides of :func:`default_algo_kwargs` (``policy_kwargs`` are merged key by key).
        **kwargs: Passed to the SB3 class as they are (``verbose``, ``tensorboard_log``, ``device``, ...).
    """
    cls = algorithm_class(algo)
    if not isinstance(total_timesteps, int) or total_timesteps < 1:
        raise ValueError(f"total_timesteps must be a positive integer; got {total_timesteps!r}")
    num_slots = getattr(env, "num_envs", 1)
    merged = _merge(default_algo_kwargs(algo, num_slots, total_timesteps), algo_kwargs)
    _resolve_action_noise(merged, int(env.action_space.shape[0]))
    return cls("MlpPolicy", env, seed=seed, **{"device": "cpu", **merged, **kwargs})


def _batch_size(rollout: int, cap: int = 64) -> int:
    """The largest divisor of ``rollout`` up to ``cap`` (no truncated mini-batch), unless that is tiny."""
    best = max(d for d in range(1, min(cap, rollout) + 1) if rollout % d == 0)
    return best if best >= 16 or best == rollout else min(cap, rollout)


def _resolve_action_noise(kwargs: dict, action_dim: int) -> None:
    noise = kwargs.get("action_noise")
    if isinstance(noise, str):
        import numpy as np
        from stable_baselines3.common.noise import NormalActionNoise

        kind, _, sigma = noise.partition(":")
        if kind != "normal":
            raise ValueError(f"action_noise={noise!r}: use 'normal:<std>' or an SB3 ActionNoise object")
        kwargs["action_noise"] = NormalActionNoise(np.zeros(action_dim), np.full(action_dim, float(sigma or 0.1)))


def _merge(defaults: dict, overrides: dict | None) -> dict:
    out = dict(defaults)
    for key, value in (overrides or {}).items():
        if key == "policy_kwargs" and isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def checkpoints(log_dir: str | os.PathLike, algo: str) -> list[tuple[Path, int]]:
    """Every ``checkpoints/<algo>_<steps>_steps.zip`` in ``log_dir`` with its step count, newest first."""
    folder = Path(log_dir) / "checkpoints"
    pattern = re.compile(rf"^{re.escape(algo)}_(\d+)_steps\.zip$")
    found = [(int(m.group(1)), p) for p in folder.glob("*.zip") if (m := pattern.match(p.name))]
    return [(path, steps) for steps, path in sorted(found, reverse=True)]


def latest_checkpoint(log_dir: str | os.PathLike, algo: str) -> tuple[Path, int] | None:
    """The newest ``checkpoints/<algo>_<steps>_steps.zip`` in ``log_dir`` and its step count, or ``None``."""
    found = checkpoints(log_dir, algo)
    return found[0] if found else None


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why the SB3 checkpoint at ``path`` cannot be loaded (a truncated or corrupted zip), or ``None``.

    Reads the zip's directory and checks every member's CRC, without building a model or an env.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = {"data", "policy.pth"} - names
            if missing:
                return f"it is truncated, or not an SB3 save: it lacks {', '.join(sorted(missing))}"
            bad = zf.testzip()
            if bad is not None:
                return f"{bad} in it is corrupted (CRC mismatch)"
    except (OSError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError) as err:
        return f"it is not a complete zip file ({err})"
    return None


def usable_checkpoint(log_dir: str | os.PathLike, algo: str, *, report=None) -> tuple[Path, int] | None:
    """The newest checkpoint of ``algo`` in ``log_dir`` that passes :func:`checkpoint_problem`, or ``None``.

    A checkpoint that does not (a disk that filled up while an older tailmix, or SB3 itself, wrote it in place) is
    skipped; ``report(line)`` is told which, and which one is used instead.
    """
    skipped = []
    for path, steps in checkpoints(log_dir, algo):
        problem = checkpoint_problem(path)
        if problem is None:
            if skipped and report is not None:
                report(f"warning: the latest checkpoint{'s' if len(skipped) > 1 else ''} "
                       f"{'; '.join(skipped)}: resuming from the previous good one, {path.name} (timestep {steps})")
            return path, steps
        skipped.append(f"{path.name} cannot be loaded ({problem})")
    if skipped and report is not None:
        report(f"warning: no {algo} checkpoint in {Path(log_dir) / 'checkpoints'} can be loaded: {'; '.join(skipped)}")
    return None


def _checkpoint_callback(save_freq: int, save_path: str, algo: str, save_replay_buffer: bool):
    """SB3's ``CheckpointCallback``, writing each file atomically (a temp file in the same folder, then
    ``os.replace``): SB3 saves in place, so a full disk or a kill left a truncated latest checkpoint behind."""
    from stable_baselines3.common.callbacks import CheckpointCallback

    class AtomicCheckpointCallback(CheckpointCallback):
        def _on_step(self) -> bool:
            if self.n_calls % self.save_freq == 0:
                path = Path(self._checkpoint_path(extension="zip"))
                save_model(self.model, path)
                if self.verbose >= 2:
                    print(f"Saving model checkpoint to {path}")
                if self.save_replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
                    buffer = Path(self._checkpoint_path("replay_buffer_", extension="pkl"))
                    _save_atomic(buffer, self.model.save_replay_buffer)
            return True

    return AtomicCheckpointCallback(save_freq=save_freq, save_path=save_path, name_prefix=algo,
                                    save_replay_buffer=save_replay_buffer)


def train(algo: str, env_kwargs: dict, *, wrapper: str = "shared", n_envs: int = 1, total_timesteps: int = 10_000,
          seed: int = 0, log_dir: str | os.PathLike | None = None, algo_kwargs: dict | None = None,
          checkpoint_every: int | None = None, resume: bool = False, progress_bar: bool = False,
          subprocess: bool = False, verbose: int = 0):
    """Train an SB3 agent on ``tailmix/SyntheticRatio-v0``.

    Args:
        algo: One of :data:`ALGORITHMS`.
        env_kwargs: Keyword arguments of ``SyntheticRatioEnv`` / ``SyntheticRatioCentralEnv`` (dataset, mode, ...).
        wrapper: ``"shared"`` (one policy shared by all class agents) or ``"central"`` (one agent, all ratios).
        n_envs: Env copies, seeded ``seed + k``.
        total_timesteps: Transitions to collect in total (a shared-wrapper env step of ``C`` agents counts ``C``).
            With ``resume`` it is the overall target: only the steps missing from the checkpoint are run.
        seed: Seeds SB3 (``set_random_seed``: Python, NumPy, torch), the policy and the env copies.
        log_dir: Run folder for TensorBoard, checkpoints and ``model.zip`` (``None``: nothing is written).
        algo_kwargs: Overrides of :func:`default_algo_kwargs` (``policy_kwargs`` are merged key by key).
        checkpoint_every: Save a checkpoint every this many transitions (needs ``log_dir``); the replay buffer
            is saved with it for off-policy algorithms.
        resume: Continue from the newest checkpoint in ``log_dir`` (model and replay buffer, timestep counter
            kept, TensorBoard run continued).
        progress_bar: Show SB3's progress bar (needs ``rich`` and ``tqdm``).
        subprocess: Run env copies in subprocesses.
        verbose: SB3 verbosity.

    Returns:
        The trained model (its env stays open: ``model.get_env().close()`` when done).
    """
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.utils import set_random_seed

    from tailmix.agents.callbacks import TailmixMetricsCallback
    from tailmix.agents.wrappers import make_vec_env

    cls = algorithm_class(algo)
    algo = algo.lower()
    if not isinstance(total_timesteps, int) or total_timesteps < 1:
        raise ValueError(f"total_timesteps must be a positive integer; got {total_timesteps!r}")
    if (checkpoint_every is not None or resume) and log_dir is None:
        raise ValueError("checkpoint_every and resume need log_dir (the run folder holding the checkpoints)")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be a positive number of timesteps; got {checkpoint_every!r}")
    checkpoint = None
    if resume:
        checkpoint = usable_checkpoint(log_dir, algo, report=lambda line: print(line, flush=True))
        if checkpoint is None:
            raise ValueError(f"resume=True but {Path(log_dir) / 'checkpoints'} holds no {algo} checkpoint that loads; "
                             "train without resume (or with checkpoint_every) first")

    set_random_seed(seed)
    venv = make_vec_env(wrapper, env_kwargs, n_envs=n_envs, seed=seed, subprocess=subprocess)
    tb = str(Path(log_dir) / "tb") if log_dir is not None else None
    if checkpoint is not None:
        path, _ = checkpoint
        model = cls.load(path, env=venv, device="cpu", tensorboard_log=tb)
        buffer = path.with_name(f"{algo}_replay_buffer_{checkpoint[1]}_steps.pkl")
        if algo in OFF_POLICY and buffer.exists():
            model.load_replay_buffer(buffer)
        model.set_random_seed(seed + model.num_timesteps)  # a fresh but reproducible stream for the continuation
        reset_num_timesteps = False
        remaining = total_timesteps - model.num_timesteps
    else:
        kwargs = _merge(default_algo_kwargs(algo, venv.num_envs, total_timesteps), algo_kwargs)
        _resolve_action_noise(kwargs, int(venv.action_space.shape[0]))
        model = cls("MlpPolicy", venv, seed=seed, tensorboard_log=tb, verbose=verbose, device="cpu", **kwargs)
        reset_num_timesteps = True
        remaining = total_timesteps

    callbacks = [TailmixMetricsCallback()]
    if checkpoint_every is not None:
        callbacks.append(_checkpoint_callback(max(checkpoint_every // venv.num_envs, 1),
                                              str(Path(log_dir) / "checkpoints"), algo, algo in OFF_POLICY))
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=CallbackList(callbacks), tb_log_name=algo.upper(),
                    reset_num_timesteps=reset_num_timesteps, progress_bar=progress_bar)
    if log_dir is not None:
        save_model(model, Path(log_dir) / "model.zip")
        write_json_atomic(Path(log_dir) / "agent.json", {
            "algo": algo, "wrapper": wrapper, "n_envs": n_envs, "seed": seed, "total_timesteps": total_timesteps,
            "num_timesteps": int(model.num_timesteps)})
    return model


def save_model(model, path: str | os.PathLike) -> Path:
    """Save an SB3 model atomically (a temp file in the same folder, then ``os.replace``)."""
    return _save_atomic(Path(path), model.save)


def _save_atomic(path: Path, save) -> Path:
    """``save(tmp)`` to a temp file beside ``path`` (same suffix: SB3 appends ``.zip`` / ``.pkl`` to others), fsynced,
    then ``os.replace``: ``path`` is the old file or the complete new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, dir=path.parent, prefix=".tmp-model-")
    os.close(fd)
    from tailmix.io.atomic import honour_umask

    honour_umask(tmp)  # mkstemp's 0600 would make a shared run folder's model unreadable to others
    try:
        save(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_model(algo: str | None, path: str | os.PathLike, env=None):
    """Load a saved model. ``algo=None`` reads it from ``agent.json`` beside the file."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no saved model at {path}; train one with agents.sb3.train(..., log_dir=...)")
    if algo is None:
        meta = path.parent / "agent.json"
        if not meta.exists():
            raise ValueError(f"cannot tell the algorithm of {path}: pass algo (one of {ALGORITHMS})")
        algo = json.loads(meta.read_text())["algo"]
    return algorithm_class(algo).load(path, env=env, device="cpu")


class SB3Backend(Backend):
    """Stable-Baselines3 in this process: ``--algo`` ppo, sac, a2c or td3 with either wrapper, resumable; it saves
    ``model.zip`` beside ``agent.json`` (the checkpoint marker: a saved model is a file)."""

    name = "sb3"
    help = "Stable-Baselines3 in this process (--algo ppo|sac|a2c|td3, --wrapper shared|central, --resume)"
    main_job = True

    def check(self, cfg) -> None:
        if cfg.algo not in ALGORITHMS:
            raise ValueError(f"unknown --algo {cfg.algo!r}; choose one of {', '.join(ALGORITHMS)}")

    def label(self, cfg) -> str:
        return cfg.algo

    def train(self, cfg, env_kwargs: dict, run_dir: Path) -> Path:
        run_dir = Path(run_dir)
        what = "training"
        if cfg.resume:
            try:
                final = json.loads((run_dir / "agent.json").read_text()).get("num_timesteps", -1)
            except (OSError, ValueError):
                final = -1
            if (run_dir / "model.zip").is_file() and final >= cfg.timesteps:
                # Training finished before; retraining from an older checkpoint would replace the final model.
                print(f"{run_dir / 'model.zip'} is already trained to {final} >= --timesteps {cfg.timesteps} "
                      "timesteps; nothing left to train (pass a larger --timesteps to train on)")
                return run_dir / "model.zip"
            what = f"resuming from timestep {usable_checkpoint(run_dir, cfg.algo)[1]}:"  # train() says if it skips one
        print(f"{what} {cfg.algo} ({cfg.wrapper}) to {cfg.timesteps} timesteps; TensorBoard: tensorboard --logdir "
              f"{run_dir}", flush=True)
        model = train(cfg.algo, env_kwargs, wrapper=cfg.wrapper, n_envs=cfg.n_envs, total_timesteps=cfg.timesteps,
                      seed=cfg.seed, log_dir=str(run_dir), checkpoint_every=cfg.checkpoint_every, resume=cfg.resume,
                      progress_bar=True)
        env = model.get_env()
        if env is not None:
            env.close()
        return run_dir / "model.zip"

    def is_checkpoint(self, path: Path) -> bool:
        return Path(path).is_file()

    def load_policy(self, path: Path, info: dict | None = None):
        """The model at ``path`` as an ``SB3Policy``; ``info`` gives its ``algo`` and ``wrapper`` (else
        ``agent.json`` beside it; the wrapper else follows from the observation space: a matrix is ``central``)."""
        from tailmix.agents.baselines import SB3Policy

        path = Path(path)
        info = dict(info or {})
        if "algo" not in info:
            try:
                meta = json.loads((path.parent / "agent.json").read_text())
            except (OSError, ValueError):
                meta = {}
            info.update({k: meta[k] for k in ("algo", "wrapper") if meta.get(k) is not None and k not in info})
        algo = info.get("algo")
        if algo is None:
            raise ValueError(f"cannot tell which algorithm saved {path} (no agent.json or run.json beside it); "
                             "write the spec as ALGO:path, e.g. ppo:" + str(path))
        try:
            model = load_model(algo, path)
        except ValueError:
            raise
        except Exception as err:  # a truncated zip, another algo's file, a pickle from an incompatible SB3
            raise ValueError(f"cannot load {path} as a {algo} model ({type(err).__name__}: {err}); is it a model.zip "
                             "saved by SB3 with that algorithm?") from None
        wrapper = info.get("wrapper") or ("central" if len(model.observation_space.shape) == 2 else "shared")
        return SB3Policy(model, wrapper=wrapper)

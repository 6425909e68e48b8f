"""Train RLlib PPO on the PettingZoo env through ``ParallelPettingZooEnv``: one policy shared by all class agents.

The ``tailmix/SyntheticRatio-v0`` parallel env runs unchanged inside RLlib's ``ParallelPettingZooEnv``; the
policy mapping sends every ``class_<i>`` agent to the single module ``"shared"`` (parameter sharing: the
one-hot class id in the observation lets it tell the classes apart), and ``num_env_runners`` Ray actors
step env copies in parallel. A CLI is a thin layer over :func:`train_rllib`. Run folder layout (``log_dir``),
as ``agents.sb3`` writes it::

    tb/RLLIB_PPO_<n>/   TensorBoard events: SB3's tag names where RLlib has a counterpart (rollout/ep_rew_mean,
                        rollout/ep_len_mean, time/fps, time/iterations, time/total_timesteps, train/loss,
                        train/policy_gradient_loss, train/value_loss, train/entropy_loss, train/approx_kl,
                        train/explained_variance, train/learning_rate), the env's tailmix/* scalars (per-class
                        recall and ratio, mean ratio, reward, balanced accuracy; see agents.callbacks) and
                        every other numeric RLlib result under rllib/*
    checkpoints/ppo_<steps>_steps/   periodic RLlib checkpoints (``checkpoint_every`` agent steps)
    checkpoint/         the final RLlib checkpoint (``Algorithm.from_checkpoint``; :func:`load_rllib_policy`)
    agent.json          backend, algo, seed, timesteps, env runners

Timesteps count agent steps, as the SB3 shared wrapper does: one env step of ``C`` class agents counts ``C``.
The x axis of every scalar is that count.

Defaults follow SB3's PPO so the two backends are comparable (RLlib's own differ): learning rate 3e-4,
``lambda`` 0.95, clip 0.2, no KL penalty, 10 epochs, separate 64-64 tanh policy and value networks, and
``log_std_init=-1`` (a state-independent log std starting at -1, see ``agents.sb3``: with std 1 much of
the Gaussian's mass is clipped at the action bounds, biasing the mean ratio inwards).

Needs the ``ray`` extra: ``pip install -e ".[ray]"``. Ray pins its own gymnasium (``ray[rllib]`` 2.60 pins
``gymnasium==1.2.2``); tailmix works with it.
"""
from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import numpy as np

from tailmix.agents.backends import Backend, scalar_tag, write_json_atomic
from tailmix.agents.baselines import Policy

RLLIB_ENV_ID = "tailmix/SyntheticRatio-v0"
POLICY_ID = "shared"
RAY_EXTRA_HINT = 'install the ray extra: pip install -e ".[ray]" (or pip install "ray[rllib]>=2.40")'

#: SB3's TensorBoard tag for an RLlib learner metric of the shared module (sign flips marked by ``-``).
SB3_TRAIN_TAGS = {"total_loss": "train/loss", "policy_loss": "train/policy_gradient_loss",
                  "vf_loss": "train/value_loss", "entropy": "-train/entropy_loss", "mean_kl_loss": "train/approx_kl",
                  "vf_explained_var": "train/explained_variance",
                  "default_optimizer_learning_rate": "train/learning_rate"}


def _import_ray():
    try:
        import ray
        from ray.rllib.algorithms.ppo import PPOConfig  # noqa: F401 - fails when only ray core is installed
    except ImportError as err:
        raise ModuleNotFoundError(f"RLlib is not installed ({err}); {RAY_EXTRA_HINT}") from None
    return ray


def with_class_names(infos: dict, names, agents: list) -> dict:
    """Each agent's info with its ``class_name`` added (the env's step infos hold numbers only; RLlib's are
    plain dicts, so the callback reads the name from them)."""
    index = {a: i for i, a in enumerate(agents)}
    return {a: ({**info, "class_name": str(names[index[a]])} if isinstance(info, dict) and a in index else info)
            for a, info in infos.items()}


def make_rllib_env(env_config: dict | None = None):
    """RLlib env creator: ``ParallelPettingZooEnv(SyntheticRatioEnv(**env_config))`` with a fixed agent order,
    each agent's info named (``class_name``) for :class:`TailmixRLlibCallback`."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

    class NamedParallelPettingZooEnv(ParallelPettingZooEnv):
        def reset(self, *, seed=None, options=None):
            obs, infos = super().reset(seed=seed, options=options)
            return obs, with_class_names(infos, self.par_env.class_names, self.par_env.possible_agents)

        def step(self, action_dict):
            *out, infos = super().step(action_dict)
            return (*out, with_class_names(infos, self.par_env.class_names, self.par_env.possible_agents))

    env = NamedParallelPettingZooEnv(SyntheticRatioEnv(**dict(env_config or {})))
    # the wrapper lists agents from a set (arbitrary order per process); keep the env's class order
    env.agents = list(env.par_env.possible_agents)
    env.possible_agents = list(env.par_env.possible_agents)
    return env


def register_rllib_env() -> str:
    """Register :func:`make_rllib_env` with Ray's env registry under :data:`RLLIB_ENV_ID` (safe to repeat)."""
    from ray.tune.registry import register_env

    register_env(RLLIB_ENV_ID, make_rllib_env)
    return RLLIB_ENV_ID


def _policy_mapping_fn(agent_id, episode=None, **kwargs) -> str:
    return POLICY_ID


def _metrics_callback_class():
    """An ``RLlibCallback`` logging the env's infos like :class:`agents.callbacks.TailmixMetricsCallback`."""
    from ray.rllib.callbacks.callbacks import RLlibCallback

    class TailmixRLlibCallback(RLlibCallback):
        """Per env step: every class's validation recall and ratio, the mean ratio, reward and balanced accuracy.

        Values are averaged between two training iterations (``reduce="mean"``) into the results under
        ``env_runners/tailmix/...``; :func:`train_rllib` writes them to TensorBoard as ``tailmix/...``.
        """

        def on_episode_step(self, *, episode, metrics_logger=None, **kwargs) -> None:
            if metrics_logger is None:
                return
            infos = episode.get_infos(-1)
            rewards = episode.get_rewards(-1)
            log = metrics_logger.log_value
            ratios, accuracy = [], None
            for info in infos.values():
                if not isinstance(info, dict) or "class_name" not in info:
                    continue
                name = scalar_tag(info["class_name"])
                if "recall" in info:
                    log(("tailmix", "recall", name), float(info["recall"]), reduce="mean")
                if "ratio" in info:
                    log(("tailmix", "ratio", name), float(info["ratio"]), reduce="mean")
                    ratios.append(float(info["ratio"]))
                accuracy = info.get("balanced_accuracy", accuracy)
            if ratios:
                log(("tailmix", "mean_ratio"), float(np.mean(ratios)), reduce="mean")
            if accuracy is not None:
                log(("tailmix", "balanced_accuracy"), float(accuracy), reduce="mean")
            if rewards:
                log(("tailmix", "reward"), float(np.mean(list(rewards.values()))), reduce="mean")

    return TailmixRLlibCallback


def default_ppo_settings(num_classes: int, total_timesteps: int | None, num_env_runners: int) -> dict:
    """Our PPO defaults (SB3's, see the module docs) sized to the run.

    ``train_batch_size`` (env steps per iteration) is ``clip(ceil(total_timesteps / (C * runners)), 8, 128)``
    per env runner, as SB3's ``n_steps`` per slot, so a tiny run still updates; ``minibatch_size`` (agent
    steps) is at most 64.
    """
    runners = max(int(num_env_runners), 1)
    per_runner = 128 if total_timesteps is None else \
        int(min(128, max(8, math.ceil(total_timesteps / (max(num_classes, 1) * runners)))))
    batch = per_runner * runners
    return {"train_batch_size": batch, "minibatch_size": int(min(64, batch)), "num_epochs": 10,
            "lr": 3e-4, "gamma": 0.99, "lambda_": 0.95, "clip_param": 0.2, "use_kl_loss": False,
            "entropy_coeff": 0.0, "vf_loss_coeff": 0.5, "grad_clip": 0.5}


def build_ppo_config(env_kwargs: dict, *, seed: int = 0, num_env_runners: int = 2, num_classes: int,
                     total_timesteps: int | None = None, algo_kwargs: dict | None = None,
                     hidden: tuple[int, ...] = (64, 64), log_std_init: float | None = -1.0,
                     num_gpus_per_learner: float = 0.0):
    """The ``PPOConfig`` :func:`train_rllib` runs (build it yourself to change anything else).

    Args:
        env_kwargs: ``SyntheticRatioEnv`` keyword arguments (the env config of every env runner).
        seed: Seeds RLlib (policy initialisation and each env runner's env, ``seed`` plus the runner index).
        num_env_runners: Ray actors stepping env copies (0: sample in the driver).
        num_classes: The env's class count (sizes the default batches).
        total_timesteps: The run's agent steps (sizes the default batches; ``None``: full size).
        algo_kwargs: Overrides of :func:`default_ppo_settings` and any other ``PPOConfig.training`` argument.
        hidden: Hidden layer sizes of the policy and (separate) value networks.
        log_std_init: Initial state-independent log std of the Gaussian policy (``None``: RLlib's
            state-dependent log std).
        num_gpus_per_learner: GPUs for the learner (0: train on the CPU).
    """
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    settings = {**default_ppo_settings(num_classes, total_timesteps, num_env_runners), **(algo_kwargs or {})}
    batch = settings.pop("train_batch_size")
    model = DefaultModelConfig(fcnet_hiddens=list(hidden), fcnet_activation="tanh", vf_share_layers=False,
                               free_log_std=log_std_init is not None)
    return (PPOConfig()
            .environment(register_rllib_env(), env_config=dict(env_kwargs))
            .multi_agent(policies={POLICY_ID}, policy_mapping_fn=_policy_mapping_fn)
            .env_runners(num_env_runners=int(num_env_runners), rollout_fragment_length="auto",
                         num_envs_per_env_runner=1)
            .learners(num_learners=0, num_gpus_per_learner=num_gpus_per_learner)
            .training(train_batch_size_per_learner=int(batch), **settings)
            .rl_module(model_config=model)
            .callbacks(_metrics_callback_class())
            .reporting(metrics_num_episodes_for_smoothing=100)
            .debugging(seed=int(seed), log_level="ERROR"))


def _set_log_std(algo, value: float) -> None:
    """Set the shared module's free log std to ``value`` on the learner and push it to the env runners."""
    def fill(learner) -> None:
        import torch

        with torch.no_grad():
            found = [p for n, p in learner.module[POLICY_ID].named_parameters() if n.endswith("log_std")]
            assert found, "free_log_std=True but the module has no log_std parameter"
            for p in found:
                p.fill_(float(value))

    algo.learner_group.foreach_learner(fill)
    algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)


def _flatten(d: dict, prefix: str = ""):
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + "/")
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            if math.isfinite(float(value)):
                yield name, float(value)


def agent_steps(result: dict) -> int:
    """Agent steps sampled so far (the sum over agents, as SB3's shared wrapper counts)."""
    per_agent = result.get("env_runners", {}).get("num_agent_steps_sampled_lifetime", {})
    if isinstance(per_agent, dict) and per_agent:
        return int(sum(per_agent.values()))
    return int(result.get("env_runners", {}).get("num_module_steps_sampled_lifetime", {}).get(POLICY_ID, 0))


def tensorboard_scalars(result: dict) -> dict[str, float]:
    """The scalars :func:`train_rllib` writes for one iteration's ``result`` (tag -> value)."""
    runners = result.get("env_runners", {})
    out: dict[str, float] = {}
    returns = runners.get("agent_episode_returns_mean", {})
    if isinstance(returns, dict) and returns:  # per-agent return, as an SB3 shared-wrapper slot sees it
        out["rollout/ep_rew_mean"] = float(np.mean(list(returns.values())))
    if "episode_len_mean" in runners:
        out["rollout/ep_len_mean"] = float(runners["episode_len_mean"])
    out["time/iterations"] = float(result.get("training_iteration", 0))
    out["time/total_timesteps"] = float(agent_steps(result))
    learner = result.get("learners", {}).get(POLICY_ID, {})
    for key, tag in SB3_TRAIN_TAGS.items():
        if key in learner and math.isfinite(float(learner[key])):
            out[tag.lstrip("-")] = -float(learner[key]) if tag.startswith("-") else float(learner[key])
    for name, value in _flatten(runners.get("tailmix", {}), "tailmix/"):
        out[name] = value
    for name, value in _flatten({k: v for k, v in result.items() if k not in ("config", "tailmix")}):
        if not name.startswith("env_runners/tailmix/"):
            out[f"rllib/{name}"] = value
    return out


def _next_run_folder(tb_root: Path, name: str) -> Path:
    """``tb_root/<name>_<n>`` with ``n`` one above the highest existing (SB3's naming)."""
    pattern = re.compile(rf"^{re.escape(name)}_(\d+)$")
    taken = [int(m.group(1)) for p in tb_root.glob(f"{name}_*") if (m := pattern.match(p.name))]
    return tb_root / f"{name}_{max(taken, default=0) + 1}"


def train_rllib(env_kwargs: dict, *, log_dir: str | os.PathLike, total_timesteps: int | None = None,
                iterations: int | None = None, seed: int = 0, num_env_runners: int = 2,
                algo_kwargs: dict | None = None, hidden: tuple[int, ...] = (64, 64),
                log_std_init: float | None = -1.0, checkpoint_every: int | None = None, num_gpus: float = 0.0,
                address: str | None = None, verbose: int = 0) -> Path:
    """Train RLlib PPO with one policy shared by every class agent; returns the final checkpoint's folder.

    Args:
        env_kwargs: ``SyntheticRatioEnv`` keyword arguments (dataset, source, mode, ...); every env runner builds
            its own env from them, so they must pickle (datasets and banks do).
        log_dir: Run folder for TensorBoard, checkpoints and ``agent.json`` (see the module docs).
        total_timesteps: Agent steps to sample (a step of ``C`` class agents counts ``C``); training stops at
            the first iteration that reaches it. Give this or ``iterations``.
        iterations: Training iterations (one batch of ``train_batch_size`` env steps each) instead.
        seed: Seeds RLlib: the policy's initial weights and each env runner's env.
        num_env_runners: Ray actors stepping env copies in parallel, one CPU each (0: sample in the driver).
        algo_kwargs: Overrides of :func:`default_ppo_settings` (``train_batch_size`` in env steps,
            ``minibatch_size``, ``num_epochs``, ``lr``, ...) or any other ``PPOConfig.training`` argument.
        hidden: Hidden layers of the policy and value networks.
        log_std_init: Initial log std of the Gaussian policy (state-independent); ``None``: RLlib's default.
        checkpoint_every: Also save a checkpoint every this many agent steps (at the end of the iteration that
            crosses each multiple), under ``checkpoints/ppo_<steps>_steps``.
        num_gpus: GPUs for the learner (the env runners stay on CPUs; feature-mode steps are milliseconds).
        address: Ray cluster to connect to when Ray is not initialised (``"auto"``: the local node's cluster;
            ``None``: ``RAY_ADDRESS`` or a new local instance). A Ray started here is shut down at the end.
        verbose: 1 prints one line per iteration.

    Returns:
        ``log_dir/checkpoint``, loadable with ``Algorithm.from_checkpoint`` or :func:`load_rllib_policy`.
    """
    if (total_timesteps is None) == (iterations is None):
        raise ValueError("give exactly one of total_timesteps (agent steps) and iterations, e.g. "
                         "train_rllib(env_kwargs, total_timesteps=10_000, log_dir='runs/rllib')")
    for label, value in (("total_timesteps", total_timesteps), ("iterations", iterations),
                         ("checkpoint_every", checkpoint_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{label} must be a positive integer; got {value!r}")
    if isinstance(num_env_runners, bool) or not isinstance(num_env_runners, int) or num_env_runners < 0:
        raise ValueError(f"num_env_runners must be an int >= 0 (0 samples in the driver); got {num_env_runners!r}")
    if log_dir is None:
        raise ValueError("log_dir is required: the run folder that receives TensorBoard logs and the checkpoint")
    ray = _import_ray()
    from torch.utils.tensorboard import SummaryWriter

    env_kwargs, num_classes = _resolve_env_kwargs(env_kwargs)
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose > 0)
        started = True
    writer = None
    algo = None
    try:
        config = build_ppo_config(env_kwargs, seed=seed, num_env_runners=num_env_runners, num_classes=num_classes,
                                  total_timesteps=total_timesteps, algo_kwargs=algo_kwargs, hidden=hidden,
                                  log_std_init=log_std_init, num_gpus_per_learner=num_gpus)
        algo = config.build_algo()
        if log_std_init is not None:
            _set_log_std(algo, log_std_init)
        writer = SummaryWriter(str(_next_run_folder(log_dir / "tb", "RLLIB_PPO")))
        steps = 0
        it = 0
        while True:
            t0 = time.perf_counter()
            result = algo.train()
            it += 1
            before, steps = steps, agent_steps(result)
            scalars = tensorboard_scalars(result)
            scalars["time/fps"] = (steps - before) / max(time.perf_counter() - t0, 1e-9)
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, global_step=steps)
            writer.flush()
            if verbose:
                print(f"[rllib] iteration {it}: {steps} agent steps, ep_rew_mean "
                      f"{scalars.get('rollout/ep_rew_mean', float('nan')):.4f}", flush=True)
            if checkpoint_every is not None and steps // checkpoint_every > before // checkpoint_every:
                algo.save_to_path(str((log_dir / "checkpoints" / f"ppo_{steps}_steps").resolve()))
            if (iterations is not None and it >= iterations) or (total_timesteps is not None
                                                                  and steps >= total_timesteps):
                break
        final = (log_dir / "checkpoint").resolve()
        algo.save_to_path(str(final))
        write_json_atomic(log_dir / "agent.json", {
            "backend": "rllib", "algo": "ppo", "wrapper": "shared", "policy_id": POLICY_ID, "seed": seed,
            "num_env_runners": num_env_runners, "total_timesteps": total_timesteps, "iterations": it,
            "num_timesteps": steps, "checkpoint": "checkpoint"})
        return final
    finally:
        if writer is not None:
            writer.close()
        if algo is not None:
            algo.stop()
            _remove_empty_logdir(algo)
        if started:
            ray.shutdown()


def _resolve_env_kwargs(env_kwargs: dict) -> tuple[dict, int]:
    """Check the env arguments in the driver (a clear error here, not a traceback from a remote actor), load a
    dataset spec once (env runners get the arrays, not a path they may not see) and make the encoder cache path
    absolute (env runners find the encoder the driver fitted instead of fitting their own)."""
    from tailmix.envs.config import RatioEnvConfig
    from tailmix.envs.assembly import resolve_dataset

    if not isinstance(env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict of SyntheticRatioEnv arguments; got {type(env_kwargs).__name__}")
    kwargs = dict(env_kwargs)
    kwargs["dataset"] = resolve_dataset(kwargs.get("dataset"))
    rest = {k: v for k, v in kwargs.items() if k not in ("dataset", "source", "max_cycles", "render_mode")}
    if kwargs.get("max_cycles") is not None:
        rest["max_steps"] = kwargs["max_cycles"]
    RatioEnvConfig(**rest)  # raises on unknown or invalid settings
    if isinstance(kwargs.get("cache_dir"), (str, os.PathLike)):  # env runners on other nodes may start in another folder
        kwargs["cache_dir"] = str(Path(kwargs["cache_dir"]).expanduser().resolve())
    return kwargs, int(kwargs["dataset"].num_classes)


def _remove_empty_logdir(algo) -> None:
    """Remove the empty results folder Ray's Trainable makes under ``~/ray_results`` (our writer replaces it)."""
    folder = getattr(algo, "logdir", None)
    if folder and os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)


# -- evaluation --------------------------------------------------------------------------------------------
def load_rllib_module(checkpoint: str | os.PathLike):
    """The shared policy's ``RLModule`` from a :func:`train_rllib` checkpoint (no Ray cluster needed)."""
    _import_ray()
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(checkpoint) / "learner_group" / "learner" / "rl_module" / POLICY_ID
    if not path.is_dir():
        raise ValueError(f"{checkpoint} is not a train_rllib checkpoint (no {path}); pass the 'checkpoint' folder "
                         "of a run (log_dir/checkpoint)")
    return RLModule.from_checkpoint(str(path))


class RLlibPolicy(Policy):
    """A :func:`train_rllib` policy behind the ``agents.baselines`` interface (``reset`` / ``act``).

    Args:
        checkpoint: The run's ``checkpoint`` folder.
        deterministic: Act with the Gaussian's mean (default); ``False`` samples from torch's global RNG,
            which :meth:`reset` seeds.
        name: Label for tables (default ``"rllib-ppo"``).
    """

    def __init__(self, checkpoint: str | os.PathLike, *, deterministic: bool = True, name: str = "rllib-ppo") -> None:
        self.module = load_rllib_module(checkpoint)
        self.deterministic = deterministic
        self.name = name

    def reset(self, seed: int | None = None) -> None:
        if not self.deterministic and seed is not None:
            import torch

            torch.manual_seed(seed)

    def act(self, observations: dict[str, np.ndarray], env) -> dict[str, np.ndarray]:
        import torch

        live = [a for a in env.possible_agents if a in env.agents]
        obs = torch.as_tensor(np.stack([np.asarray(observations[a], np.float32) for a in live]))
        expected = self.module.observation_space.shape
        if tuple(obs.shape[1:]) != tuple(expected):
            raise ValueError(f"the policy expects observations {expected} but agents observe {tuple(obs.shape[1:])}; "
                             "was it trained on a dataset with another number of classes?")
        with torch.no_grad():
            out = self.module.forward_inference({"obs": obs})
            dist = self.module.get_inference_action_dist_cls().from_logits(out["action_dist_inputs"])
            actions = (dist.to_deterministic() if self.deterministic else dist).sample()
        actions = np.clip(actions.numpy().astype(np.float32).reshape(len(live), -1), -1.0, 1.0)
        return {a: actions[i] for i, a in enumerate(live)}  # (G,): one entry per source

    def __repr__(self) -> str:
        return f"RLlibPolicy({self.name!r})"


def load_rllib_policy(checkpoint: str | os.PathLike, *, deterministic: bool = True,
                      name: str = "rllib-ppo") -> RLlibPolicy:
    """:class:`RLlibPolicy` for ``agents.evaluate`` / benchmarks."""
    return RLlibPolicy(checkpoint, deterministic=deterministic, name=name)


class RLlibBackend(Backend):
    """Ray RLlib PPO with one policy shared by the class agents, several env runners (the ``ray`` extra). Its
    checkpoint marker: a folder holding ``rllib_checkpoint.json``."""

    name = "rllib"
    help = ("Ray RLlib PPO, one shared policy, --env-runners actors (needs the ray extra; train command only, "
            "--algo ppo --wrapper shared, no --n-envs or --resume)")

    def check(self, cfg) -> None:
        if not (cfg.algo == "ppo" and cfg.wrapper == "shared" and cfg.n_envs == 1 and not cfg.resume):
            raise ValueError("--backend rllib trains PPO with one policy shared by the class agents: use --algo ppo "
                             "--wrapper shared, scale with --env-runners (not --n-envs), and no --resume")

    def label(self, cfg) -> str:
        return "rllib ppo"

    def train(self, cfg, env_kwargs: dict, run_dir: Path) -> Path:
        return train_rllib(env_kwargs, log_dir=run_dir, total_timesteps=cfg.timesteps, seed=cfg.seed,
                           num_env_runners=cfg.env_runners, checkpoint_every=cfg.checkpoint_every, verbose=1)

    def is_checkpoint(self, path: Path) -> bool:
        return (Path(path) / "rllib_checkpoint.json").is_file()

    def load_policy(self, path: Path, info: dict | None = None):
        return load_rllib_policy(path)

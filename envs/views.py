"""What the env views share: infos in each framework's shape, render modes, the single-copy conveniences.

:class:`envs.core.RatioCore` builds every step's infos once, as arrays (:meth:`~envs.core.RatioCore.infos`);
the functions here slice them into the dicts the PettingZoo env, the gymnasium view and the SB3 adapter hand
out. :class:`SingleCopyViews` is the read-only API of the one-copy views.
"""
from __future__ import annotations

import numpy as np

from tailmix.envs.config import RatioEnvConfig
from tailmix.envs.core import CLASS_INFO_KEYS, RatioCore

#: Per-class keys under another name in one class's info (v0's per-agent key ``ratio``); ``agent_rewards`` is
#: the agent's reward itself and is left out there.
_CLASS_KEY_NAMES = {"ratios": "ratio", "agent_rewards": None}


def as_action_array(value, what: str) -> np.ndarray:
    """``value`` as a float64 array, or a ValueError saying what was wrong (never a TypeError/OverflowError).

    Strings, bytes and complex numbers are refused rather than parsed: an action is a real number.
    """
    try:
        raw = np.asarray(value)
        if raw.dtype.kind not in "biufO":
            raise TypeError(f"dtype {raw.dtype}")
        out = raw.astype(np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{what} must be real numbers (a float array); got {type(value).__name__} "
                         f"({err})") from None
    return out


def _scalar(value):
    """A 0-d array as a numpy scalar (``np.float64``, ``np.int64``); arrays stay arrays."""
    return value[()] if np.ndim(value) == 0 else value


def copy_info(infos: dict, k: int) -> dict:
    """Copy ``k``'s slice of :meth:`RatioCore.infos` (the central view's info): per-copy keys as numpy scalars
    (TorchRL's info reader takes numpy values only; gymnasium's vector envs batch them as they do Python numbers),
    per-class keys as arrays ``(C,)`` / ``(C, G)``. ``nan_loss`` appears only when set (``True``), as in v0."""
    out = {key: _scalar(np.asarray(v[k]).copy()) for key, v in infos.items()}
    if not out.pop("nan_loss", False):
        return out
    out["nan_loss"] = True
    return out


def class_infos(infos: dict) -> list[list[dict]]:
    """Every class of every copy from :meth:`RatioCore.infos`: ``out[k][cls]`` is a PettingZoo agent's info
    (numbers, and ``(G,)`` arrays for the per-source keys). ``ratios`` is named ``ratio`` there; ``nan_loss``
    appears only when set (``True``), as in v0."""
    k_count, c = np.shape(infos["ratios"])[:2]
    # Python numbers come from one ``tolist()`` per key (faster than an ``item()`` per entry); deeper arrays
    # (per source) are sliced as arrays.
    per_copy, per_class, per_source = {}, {}, {}
    for key, v in infos.items():
        v = np.asarray(v)
        if key not in CLASS_INFO_KEYS:
            per_copy[key] = v.tolist() if v.ndim == 1 else list(v)
        elif _CLASS_KEY_NAMES.get(key, key) is None:
            continue
        elif v.ndim == 2:
            per_class[_CLASS_KEY_NAMES.get(key, key)] = v.tolist()
        else:
            per_source[_CLASS_KEY_NAMES.get(key, key)] = v
    out = []
    for k in range(k_count):
        common = {key: v[k] for key, v in per_copy.items()}
        nan = common.pop("nan_loss", False)
        rows = []
        for cls in range(c):
            info = {key: v[k][cls] for key, v in per_class.items()}
            info.update({key: v[k, cls].copy() for key, v in per_source.items()})
            info.update(common)
            if nan:
                info["nan_loss"] = True
            rows.append(info)
        out.append(rows)
    return out


def class_info(infos: dict, k: int, cls: int) -> dict:
    """Class ``cls`` of copy ``k`` from :meth:`RatioCore.infos` (see :func:`class_infos`)."""
    one = {key: np.asarray(v)[k:k + 1] for key, v in infos.items()}
    return class_infos(one)[0][cls]


def observation_columns(core: RatioCore) -> tuple[str, ...]:
    """Every column of a class's observation row, the one-hot id's (``is_class_<i>``) included unless
    ``class_id_obs=False`` (:attr:`RatioCore.obs_columns`, from :data:`envs.observation.COLUMNS`)."""
    return core.obs_columns


def per_class_info(core: RatioCore, k: int = 0) -> list[dict]:
    """Copy ``k``'s infos as one dict per class with its ``class_name`` (for reading, not for batching)."""
    rows = class_infos(core.infos(slice(k, k + 1)))[0]
    return [{"class_name": name, **row} for name, row in zip(core.class_names, rows)]


#: Render modes every view implements: ``render()`` returns ``None``, the ``"ansi"`` text or an ``"rgb_array"``
#: frame (:func:`render_frame`; what SB3 asks for by default, so that ``VecVideoRecorder`` can record).
RENDER_MODES = ("ansi", "rgb_array")
#: ``metadata`` of every view: the modes, and a frame rate for video recorders (gymnasium's checker asks for one).
RENDER_METADATA = {"render_modes": list(RENDER_MODES), "render_fps": 4}

_FRAME_HEIGHT = 64


def render_frame(core: RatioCore, k: int = 0) -> np.ndarray:
    """Copy ``k`` as an RGB frame ``(64, W, 3)`` uint8: per class, a blue bar for its ratio (as a share of
    ``max_ratio``) and a green bar for its val recall; the top rows are a red bar for the balanced val accuracy."""
    c = core.c
    w = max(1, min(8, 512 // c))  # bar width: C = 10 gives 8 px bars, 10,000 classes one pixel
    per = 2 * w + max(1, w // 2)
    frame = np.zeros((_FRAME_HEIGHT, c * per, 3), np.uint8)
    if not core.metrics:  # before the first reset
        return frame
    body = _FRAME_HEIGHT - 4
    ratio = np.clip(np.nan_to_num(core.ratios[k] / core.config.max_ratio), 0, 1)
    recall = np.clip(np.nan_to_num(core.metrics["recall"][k]), 0, 1)
    for i in range(c):
        for j, (value, colour) in enumerate(((ratio[i], (70, 130, 255)), (recall[i], (60, 200, 90)))):
            h = int(round(value * body))
            x = i * per + j * w
            frame[_FRAME_HEIGHT - h:, x:x + w] = colour
    bal = float(np.clip(np.nan_to_num(core.metrics["balanced_accuracy"][k]), 0, 1))
    frame[:2, :int(round(bal * frame.shape[1]))] = (230, 60, 60)
    return frame


def accepted_render_mode(render_mode, owner: str, stacklevel: int = 4) -> str | None:
    """``render_mode`` if the envs implement it, else ``None`` after a warning (gymnasium's convention).

    Frameworks ask for modes by default (SB3's ``make_vec_env`` and ``PPO("MlpPolicy", id)`` pass
    ``"rgb_array"``, which every view renders; PettingZoo's ``render_test`` ``"human"``) and expect the env to be
    built anyway; ``gym.make`` itself only warns about a mode missing from ``metadata["render_modes"]``. An
    unsupported mode is then dropped (not kept as asked), so ``render()`` returns ``None`` and wrappers that need
    frames say so.
    """
    if render_mode is None or render_mode in RENDER_MODES:
        return render_mode
    import warnings

    warnings.warn(f"{owner}: render_mode={render_mode!r} is not supported (modes: None, "
                  f"{', '.join(map(repr, RENDER_MODES))}); rendering is off and render() returns None",
                  stacklevel=stacklevel)
    return None


class SingleCopyViews:
    """Read-only conveniences shared by the single-copy env views (PettingZoo and gymnasium).

    :meth:`_build` sets ``self.render_mode``, ``self.config`` and ``self.core`` (a one-copy :class:`RatioCore`).
    """

    def _build(self, dataset, source, render_mode, kwargs: dict, sources=None) -> None:
        self.render_mode = accepted_render_mode(render_mode, type(self).__name__)
        self.config = RatioEnvConfig(**kwargs)
        self.core = RatioCore(dataset, source, self.config, num_copies=1, sources=sources)

    @property
    def num_classes(self) -> int:
        return self.core.c

    @property
    def observation_columns(self) -> tuple[str, ...]:
        """The name of every observation column (a class agent's row), the one-hot id ``is_class_<i>`` last."""
        return observation_columns(self.core)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes' names, in agent / action-row order (step infos hold numbers only)."""
        return self.core.class_names

    def per_class_info(self) -> list[dict]:
        """The last step's infos as one dict per class with its ``class_name`` (v0's ``infos["per_class"]``)."""
        return per_class_info(self.core, 0)

    @property
    def dataset(self):
        return self.core.dataset

    @property
    def ratios(self) -> np.ndarray:
        """The current ratio of every class (summed over sources)."""
        return self.core.ratios[0].copy()

    @property
    def source_ratios(self) -> np.ndarray:
        """The current ratio of every class from every source, ``(C, G)``."""
        return self.core.source_ratios[0].copy()

    @property
    def num_sources(self) -> int:
        """``G``, the number of synthetic sources (the length of each class agent's action)."""
        return self.core.g

    @property
    def source_names(self) -> tuple[str, ...]:
        """The sources' names (unique), in action order."""
        return self.core.source_names

    @property
    def train_counts(self) -> np.ndarray:
        """Real train images per class (with ``val_folds >= 2``: of the episode's training folds)."""
        return self.core.copy_counts[0].copy()

    @property
    def max_ratio(self) -> float:
        return self.config.max_ratio

    def action_to_ratio(self, action):
        """Affine map ``[-1, 1] -> [0, max_ratio]`` (clipped), vectorised."""
        return self.core.action_to_ratio(action)

    def ratio_to_action(self, ratio):
        """Inverse of :meth:`action_to_ratio` (ratios clipped to ``[0, max_ratio]``)."""
        return self.core.ratio_to_action(ratio)

"""SB3 callback that logs the env's own scalars to TensorBoard: per-class recall and ratios, reward, accuracy."""
from __future__ import annotations


import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from tailmix.agents.backends import scalar_tag


class TailmixMetricsCallback(BaseCallback):
    """Log ``tailmix/*`` scalars from the step infos, averaged over slots and steps between two dumps.

    Per-class keys are kept out of the console output (TensorBoard and CSV only).

    Keys: ``tailmix/recall/<class>`` and ``tailmix/ratio/<class>`` (validation recall and chosen ratio of each
    class), ``tailmix/mean_ratio``, ``tailmix/reward`` and ``tailmix/balanced_accuracy``. Works with every
    path of ``agents.wrappers.make_vec_env``: a shared slot's info holds one class (``class_name``, ``recall``,
    ``ratio``); a central slot's info holds every class as arrays (``recall``, ``ratios`` ``(C,)``), named by
    the env's ``class_names`` (``class_<i>`` if it has none). The last values are dumped when training ends,
    so short runs (and A2C's sparse ``log_interval``) still reach TensorBoard.
    """

    def _on_training_start(self) -> None:
        try:
            names = self.training_env.get_attr("class_names", indices=[0])[0]
        except AttributeError:  # an env without names: class_<i>
            names = None
        self._class_names = None if names is None else [scalar_tag(n) for n in names]

    def _name(self, i: int) -> str:
        names = getattr(self, "_class_names", None)
        return names[i] if names is not None and i < len(names) else f"class_{i}"

    def _on_step(self) -> bool:
        infos = self.locals.get("infos") or []
        rewards = self.locals.get("rewards")
        log = self.logger.record_mean  # averages over slots and steps until the next dump
        if rewards is not None:
            log("tailmix/reward", float(np.mean(rewards)))
        for info in infos:
            if "balanced_accuracy" in info:
                log("tailmix/balanced_accuracy", float(info["balanced_accuracy"]))
            if "class_name" in info:  # shared: one class per slot
                name = scalar_tag(info["class_name"])
                if "recall" in info:
                    log(f"tailmix/recall/{name}", float(info["recall"]), exclude="stdout")
                if "ratio" in info:
                    log(f"tailmix/ratio/{name}", float(info["ratio"]), exclude="stdout")
                    log("tailmix/mean_ratio", float(info["ratio"]))
            elif np.ndim(info.get("ratios")) == 1:  # central: every class in one info, as arrays
                ratios = np.asarray(info["ratios"], np.float64)
                recall = np.asarray(info.get("recall", ()), np.float64)
                for i, ratio in enumerate(ratios):
                    log(f"tailmix/ratio/{self._name(i)}", float(ratio), exclude="stdout")
                    if i < len(recall):
                        log(f"tailmix/recall/{self._name(i)}", float(recall[i]), exclude="stdout")
                log("tailmix/mean_ratio", float(ratios.mean()))
        return True

    def _on_training_end(self) -> None:
        self.logger.dump(self.num_timesteps)

"""SB3 callback that logs the env's own scalars to TensorBoard: per-class recall and ratios, reward, accuracy."""
from __future__ import annotations

import re

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


def _tag(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(name)) or "class"


class TailmixMetricsCallback(BaseCallback):
    """Log ``tailmix/*`` scalars from the step infos, averaged over slots and steps between two dumps.

    Per-class keys are kept out of the console output (TensorBoard and CSV only).

    Keys: ``tailmix/recall/<class>`` and ``tailmix/ratio/<class>`` (validation recall and chosen ratio of each
    class), ``tailmix/mean_ratio``, ``tailmix/reward`` and ``tailmix/balanced_accuracy``. Works with both
    wrappers: a shared-wrapper slot's info holds one class (``class_name``, ``recall``, ``ratio``); a central
    env's info holds every class (``per_class``, ``ratios``). The last values are dumped when training ends,
    so short runs (and A2C's sparse ``log_interval``) still reach TensorBoard.
    """

    def _on_step(self) -> bool:
        infos = self.locals.get("infos") or []
        rewards = self.locals.get("rewards")
        log = self.logger.record_mean  # averages over slots and steps until the next dump
        if rewards is not None:
            log("tailmix/reward", float(np.mean(rewards)))
        for info in infos:
            if "balanced_accuracy" in info:
                log("tailmix/balanced_accuracy", float(info["balanced_accuracy"]))
            if "per_class" in info:  # central: every class in one info
                ratios = []
                for pc in info["per_class"]:
                    name = _tag(pc["class_name"])
                    log(f"tailmix/recall/{name}", float(pc["recall"]), exclude="stdout")
                    log(f"tailmix/ratio/{name}", float(pc["ratio"]), exclude="stdout")
                    ratios.append(float(pc["ratio"]))
                log("tailmix/mean_ratio", float(np.mean(ratios)))
            elif "class_name" in info:  # shared: one class per slot
                name = _tag(info["class_name"])
                if "recall" in info:
                    log(f"tailmix/recall/{name}", float(info["recall"]), exclude="stdout")
                if "ratio" in info:
                    log(f"tailmix/ratio/{name}", float(info["ratio"]), exclude="stdout")
                    log("tailmix/mean_ratio", float(info["ratio"]))
        return True

    def _on_training_end(self) -> None:
        self.logger.dump(self.num_timesteps)

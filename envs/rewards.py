"""Rewards and credit: from the heads' val scores to the team's and every class agent's reward.

- :func:`shape_reward`: the ``reward`` option (``accuracy`` / ``delta`` / ``final``) applied to a score;
- :func:`step_rewards`: a step's team reward and per-agent rewards (``synthetic_cost``; ``credit="shared"``
  gives every agent the team's, ``credit="difference"`` each agent its own difference);
- :func:`counterfactual_mixes`: difference credit's counterfactual mixes, cut from each replica's one draw
  (common random numbers);
- :func:`bootstrap_std`: the reward's noise from the val split's sampling (``reward_bootstrap``).

Pure numpy functions of arrays: :class:`envs.core.RatioCore` keeps the state and calls them.
"""
from __future__ import annotations

import numpy as np

from tailmix.classifiers.metrics import metrics_from_confusion
from tailmix.envs.heads import HeadLayout


def relative_score(balanced_accuracy: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """Balanced val accuracy per copy, minus the reference head's when there is one (``reward_reference``)."""
    return balanced_accuracy - reference if reference is not None else balanced_accuracy.copy()


def class_scores(balanced_accuracy: np.ndarray, counterfactual: np.ndarray) -> np.ndarray:
    """``(K, C)``: balanced val accuracy minus each class's counterfactual's (difference credit)."""
    return balanced_accuracy[:, None] - counterfactual


def shape_reward(kind: str, score: np.ndarray, prev: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The ``reward`` option applied to a score per copy ``(K,)`` (or per copy and class ``(K, C)``).

    Args:
        kind: ``"accuracy"`` (the score), ``"delta"`` (its change since ``prev``) or ``"final"`` (the score at
            the episode's last step, 0 before).
        score, prev: this step's and the last step's score.
        last: ``(K,)`` bool, is this step the copy's last?
    """
    if kind == "accuracy":
        return score.copy()
    if kind == "delta":
        return score - prev
    return np.where(last.reshape(-1, *([1] * (score.ndim - 1))), score, 0.0)


def step_rewards(kind: str, synthetic_cost: float, last: np.ndarray, score: np.ndarray, prev: np.ndarray,
                 n_synthetic: np.ndarray, real_counts: np.ndarray, class_score: np.ndarray | None = None,
                 prev_class_score: np.ndarray | None = None, default_counts: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A step's team reward ``(K,)`` and agent rewards ``(K, C)``.

    The cost is ``synthetic_cost`` per synthetic sample relative to the copy's real size. With shared credit
    (``class_score=None``) every agent gets the team reward. With difference credit agent ``c`` gets the
    team reward minus the one with class ``c`` at the default: the accuracy part is its counterfactual head's
    (``class_score``, shaped like the team's), the cost part its own samples beyond the default's
    (``default_counts``).

    Args:
        kind, last: as :func:`shape_reward`.
        synthetic_cost: cost per synthetic sample per real sample.
        score, prev: the team score ``(K,)`` now and at the last step.
        n_synthetic: synthetic samples served ``(K, C)``.
        real_counts: real train images ``(K, C)`` of each copy's episode.
        class_score, prev_class_score, default_counts: difference credit's ``(K, C)`` arrays.
    """
    reward = shape_reward(kind, score, prev, last)
    cost = synthetic_cost / real_counts.sum(1)  # (K,)
    if synthetic_cost:
        reward = reward - cost * n_synthetic.sum(1)
    if class_score is None:
        return reward, np.repeat(reward[:, None], n_synthetic.shape[1], axis=1)
    agent_reward = shape_reward(kind, class_score, prev_class_score, last)
    if synthetic_cost:
        agent_reward = agent_reward - cost[:, None] * (n_synthetic - default_counts)
    return reward, agent_reward


def rank_within(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Position of each entry among the entries with the same label before it (0, 1, ... per label)."""
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=num_classes))[:-1]])
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - starts[labels[order]]
    return rank


def counterfactual_mixes(layout: HeadLayout, drawn: list[np.ndarray], n_real: list[int], labels: list[np.ndarray],
                         counts: np.ndarray, default: np.ndarray) -> list[np.ndarray]:
    """Every head's mix (``layout.total``) for difference credit, from one draw per replica.

    Each replica drew once, enough for its own count and the default of every class; its mix and its ``C``
    counterfactuals are per-class prefixes of that one draw. So a counterfactual differs from its replica in
    class ``c``'s synthetic rows only (common random numbers), and a class at the default gives a
    counterfactual whose mix is its replica's, row for row. With ``credit_default = 0`` the replica's draw is
    exactly what ``credit="shared"`` draws.

    Args:
        layout: the heads (``counterfactual`` set).
        drawn: per replica head (:meth:`HeadLayout.replica_heads` order), its real rows then its draws.
        n_real: per replica, how many of ``drawn``'s rows are real.
        labels: per replica, the class of each drawn synthetic row.
        counts: ``(K*R, C)`` the replica's own synthetic counts.
        default: ``(K, C)`` each copy's counts at ``credit_default``.
    """
    c, r = layout.classes, layout.replicas
    mixes: list = [None] * layout.total
    for i, (head, mix) in enumerate(zip(layout.replica_heads(), drawn)):
        k, j = divmod(i, r)
        real, syn = mix[:n_real[i]], mix[n_real[i]:]
        lab = labels[i]
        rank = rank_within(lab, c)
        own = rank < counts[i][lab]
        mixes[head] = np.concatenate([real, syn[own]])
        for cls in range(c):
            keep = np.where(lab == cls, rank < default[k, cls], own)
            mixes[layout.counterfactual_head(k, j, cls)] = np.concatenate([real, syn[keep]])
    return mixes


def bootstrap_std(layout: HeadLayout, y: np.ndarray, pred: np.ndarray, mask: np.ndarray | None, rngs: list,
                  resamples: int) -> np.ndarray:
    """Std of the balanced val accuracy over bootstrap resamples of the val split, per copy ``(K,)``.

    The val split is a sample too: on RetinaMNIST (120 images, 6 of the rarest class) this noise is larger
    than most effects of the ratios (a prototype's PPO raised val accuracy to the best fixed policy's and
    lost on test). Every resample is scored for all replicas of a copy (not the reference or counterfactuals).

    Args:
        layout: the heads.
        y, pred: val labels ``(M,)`` and every head's predictions ``(K*H, M)``.
        mask: ``(K*H, M)`` each head's scored rows (``val_folds``), or ``None``.
        rngs: per copy, its bootstrap generator (``None``: not started, NaN).
        resamples: resamples per copy (``reward_bootstrap``).
    """
    out = np.full(layout.copies, np.nan)
    c, r = layout.classes, layout.replicas
    for k, rng in enumerate(rngs):
        if rng is None:
            continue
        first = layout.replica(k, 0)
        heads = pred[first:first + r]  # (R, M): the replicas, not the reference
        yk = y
        if mask is not None:  # val_folds: the copy's held-out rows only
            yk, heads = y[mask[first]], heads[:, mask[first]]
        m = len(yk)
        idx = rng.integers(0, m, (resamples, m))
        b = idx.shape[0]
        yy = yk[idx]  # (B, M)
        flat = ((np.arange(b)[:, None, None] * r + np.arange(r)[None, :, None]) * c
                + yy[:, None, :]) * c + heads[:, idx].transpose(1, 0, 2)
        cm = np.bincount(flat.ravel(), minlength=b * r * c * c).reshape(b * r, c, c)
        bal = metrics_from_confusion(cm)["balanced_accuracy"].reshape(b, r).mean(1)
        out[k] = bal.std(ddof=1) if b > 1 else 0.0
    return out

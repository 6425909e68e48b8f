"""The evaluation protocol: full episodes from a fresh classifier, scored on the test split, over several seeds.

The test split is read only here, through the env's ``eval_split="test"`` infos at the episode's last step;
rewards and observations stay on the validation split. One env is built per evaluation and reset with each
seed, which re-initialises the classifier and every RNG stream, so a row depends only on (policy, seed) and two
runs with the same seeds give identical tables.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tailmix.io.atomic import atomic_write_bytes, atomic_write_text

#: Per-seed scalars summarised as mean and std (``summarize``), in table order.
METRICS = ("test_balanced_accuracy", "test_macro_f1", "test_accuracy", "test_many_shot", "test_medium_shot",
           "test_few_shot", "test_tail_recall", "val_balanced_accuracy", "mean_ratio")
_LABELS = {"test_balanced_accuracy": "test bal. acc.", "test_macro_f1": "test macro F1", "test_accuracy": "test acc.",
           "test_many_shot": "many-shot", "test_medium_shot": "medium-shot", "test_few_shot": "few-shot",
           "test_tail_recall": "tail recall", "val_balanced_accuracy": "val bal. acc.", "mean_ratio": "mean ratio"}


def make_eval_env(env_kwargs: dict):
    """``SyntheticRatioEnv(**env_kwargs)`` with ``eval_split="test"`` (the only place the test split is read)."""
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv

    return SyntheticRatioEnv(**{**env_kwargs, "eval_split": "test"})


def run_episode(env, policy, seed: int) -> dict:
    """Run one full episode of ``policy`` in ``env`` from ``env.reset(seed=seed)`` (a fresh classifier).

    Args:
        env: A ``SyntheticRatioEnv`` built with ``eval_split="test"`` (see :func:`make_eval_env`).
        policy: Anything with ``reset(seed)`` and ``act(observations, env)`` (``agents.baselines``).
        seed: Seeds the env (classifier init, sampling) and the policy.

    Returns:
        ``seed``, ``steps``, ``return`` (summed shared reward), the final test metrics (``test_*``:
        balanced accuracy, macro F1, accuracy, many/medium/few-shot recall, ``test_tail_recall`` = test recall
        of the class with the fewest real train images (mean over ties), ``test_recall`` per class), the final
        ``val_balanced_accuracy``, ``ratios`` (each class's ratio averaged over the episode's steps) and
        ``mean_ratio`` (their mean).
    """
    config = getattr(env, "config", None)
    if config is not None and getattr(config, "eval_split", None) != "test":
        raise ValueError("run_episode needs an env built with eval_split='test' (agents.evaluate.make_eval_env "
                         "does that); the test metrics come from its last infos")
    obs, infos = env.reset(seed=seed)
    policy.reset(seed)
    agents = list(env.possible_agents)
    ratio_sum = np.zeros(len(agents))
    total, steps = 0.0, 0
    while env.agents:
        obs, rewards, _, _, infos = env.step(policy.act(obs, env))
        ratio_sum += np.array([infos[a]["ratio"] for a in agents])
        total += float(np.mean(list(rewards.values())))
        steps += 1
    last = infos[agents[0]]
    if "test" not in last:
        raise ValueError("the env's last infos carry no 'test' metrics; build it with eval_split='test'")
    test = last["test"]
    counts = np.asarray(env.train_counts)
    recall = np.asarray(test["recall"], np.float64)
    ratios = ratio_sum / max(steps, 1)
    return {
        "seed": int(seed), "steps": steps, "return": total,
        "test_balanced_accuracy": float(test["balanced_accuracy"]), "test_macro_f1": float(test["macro_f1"]),
        "test_accuracy": float(test["accuracy"]), "test_many_shot": _float(test.get("many_shot")),
        "test_medium_shot": _float(test.get("medium_shot")), "test_few_shot": _float(test.get("few_shot")),
        "test_tail_recall": float(recall[counts == counts.min()].mean()), "test_recall": recall.tolist(),
        "val_balanced_accuracy": float(last["balanced_accuracy"]),
        "ratios": ratios.tolist(), "mean_ratio": float(ratios.mean()),
    }


def _float(x) -> float:
    return float("nan") if x is None else float(x)


def evaluate(policy, env_kwargs: dict, seeds: Iterable[int] = (0, 1, 2, 3, 4), *, env=None) -> list[dict]:
    """:func:`run_episode` for every seed; rows carry ``policy`` (its name). ``env`` reuses a built eval env."""
    env = env if env is not None else make_eval_env(env_kwargs)
    return [{"policy": policy.name, **run_episode(env, policy, s)} for s in seeds]


def summarize(rows: list[dict]) -> dict:
    """Mean and std over seeds of each metric in :data:`METRICS`.

    Returns ``{"n": seeds, "<metric>_mean": ..., "<metric>_std": ...}`` (plus ``policy`` when the rows share
    one). The std is the sample std (``ddof=1``; 0 for one seed). NaNs (an empty many/medium/few group) are
    ignored; a metric that is NaN for every seed stays NaN.
    """
    if not rows:
        raise ValueError("summarize() got no rows; evaluate at least one seed")
    out: dict = {}
    names = {r.get("policy") for r in rows}
    if len(names) == 1 and None not in names:
        out["policy"] = names.pop()
    out["n"] = len(rows)
    for m in METRICS:
        v = np.array([r[m] for r in rows], np.float64)
        v = v[~np.isnan(v)]
        out[f"{m}_mean"] = float(v.mean()) if len(v) else float("nan")
        out[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) else float("nan"))
    return out


def benchmark(policies: dict, env_kwargs: dict, seeds: Iterable[int] = (0, 1, 2, 3, 4),
              out_dir: str | os.PathLike | None = None, progress: bool = True) -> list[dict]:
    """Every policy over every seed, in one eval env; optionally write the result files.

    Args:
        policies: ``{label: policy}``; the label names the policy in the outputs.
        env_kwargs: Keyword arguments of ``SyntheticRatioEnv`` (``eval_split`` is forced to ``"test"``).
        seeds: Episode seeds (the same for every policy).
        out_dir: If given, writes (each atomically) ``results.csv`` (one row per policy and seed, per-class
            ratios and test recalls as columns), ``results.md`` (mean ± std per policy, markdown) and
            ``results.png`` (test balanced accuracy and macro F1, bars with std error bars).
        progress: Show a tqdm progress bar.

    Returns:
        The per-seed rows (``policy`` set to the label).
    """
    from tqdm.auto import tqdm

    if not policies:
        raise ValueError("benchmark() got no policies; pass {label: policy}, e.g. from agents.baselines")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("benchmark() got no seeds; pass e.g. seeds=(0, 1, 2)")
    env = make_eval_env(env_kwargs)
    rows = []
    with tqdm(total=len(policies) * len(seeds), desc="benchmark", disable=not progress) as bar:
        for label, policy in policies.items():
            for s in seeds:
                bar.set_postfix_str(f"{label} seed {s}")
                rows.append({"policy": str(label), **run_episode(env, policy, s)})
                bar.update()
    if out_dir is not None:
        write_results(rows, seeds, out_dir, [str(n) for n in env.dataset.class_names])
    return rows


def write_results(rows: list[dict], seeds, out_dir: str | os.PathLike, class_names: list[str]) -> None:
    """``results.csv``, ``results.md`` and ``results.png`` of :func:`benchmark`'s rows in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.csv", results_csv(rows, class_names))
    atomic_write_text(out / "results.md", results_markdown(rows, list(seeds)))
    atomic_write_bytes(out / "results.png", lambda fh: plot_results(rows, fh))


def summaries(rows: list[dict]) -> list[dict]:
    """:func:`summarize` per policy, in first-seen order."""
    order = list(dict.fromkeys(r["policy"] for r in rows))
    return [summarize([r for r in rows if r["policy"] == p]) for p in order]


def results_csv(rows: list[dict], class_names: list[str]) -> str:
    """Per-seed rows as CSV text; per-class lists become ``ratio_<class>`` and ``test_recall_<class>`` columns."""
    cols = ["policy", "seed", "steps", "return", *METRICS]
    cols += [f"ratio_{n}" for n in class_names] + [f"test_recall_{n}" for n in class_names]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        flat = {**r, **{f"ratio_{n}": v for n, v in zip(class_names, r["ratios"])},
                **{f"test_recall_{n}": v for n, v in zip(class_names, r["test_recall"])}}
        w.writerow([_fmt_csv(flat[c]) for c in cols])
    return buf.getvalue()


def _fmt_csv(v) -> str:
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def results_markdown(rows: list[dict], seeds: list[int] | None = None) -> str:
    """A markdown table, one line per policy, each cell ``mean ± std`` over seeds."""
    head = "| policy | " + " | ".join(_LABELS[m] for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for s in summaries(rows):
        cells = [_pm(s[f"{m}_mean"], s[f"{m}_std"]) for m in METRICS]
        lines.append(f"| {s['policy']} | " + " | ".join(cells) + " |")
    seeds = seeds if seeds is not None else sorted({r["seed"] for r in rows})
    lines += ["", f"Mean ± std over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); test split, "
              "final step of each episode; tail recall = test recall of the rarest class."]
    return "\n".join(lines) + "\n"


def _pm(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def plot_results(rows: list[dict], path) -> None:
    """Bar plot of test balanced accuracy and macro F1 per policy (std error bars) to a path or binary file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summ = summaries(rows)
    x = np.arange(len(summ))
    fig = Figure(figsize=(max(5.0, 1.1 * len(summ) + 2), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.38
    for j, (m, label) in enumerate((("test_balanced_accuracy", "balanced accuracy"), ("test_macro_f1", "macro F1"))):
        ax.bar(x + (j - 0.5) * width, [s[f"{m}_mean"] for s in summ], width, yerr=[s[f"{m}_std"] for s in summ],
               capsize=3, label=label)
    ax.set_xticks(x, [s["policy"] for s in summ], rotation=30, ha="right")
    ax.set_ylabel("test score")
    ax.set_ylim(0, 1.15)  # headroom so the legend never hides a bar
    ax.legend(loc="upper right", ncol=2, fontsize=8)
    ax.set_title(f"mean ± std over {summ[0]['n']} seed(s)")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120, metadata={"Software": None})

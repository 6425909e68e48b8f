"""benchmarks/results.py: --loss reaches every synthetic row (fixed and learned), the CEM row, the file names."""
from __future__ import annotations

import pytest

import tailmix.agents.cem
import tailmix.agents.evaluate
import benchmarks.results as results
from tests.agents.helpers import tiny_env_kwargs


@pytest.fixture
def tiny_build(monkeypatch):
    """results.build_env_kwargs on the tiny dataset (no DDPM, no bank): an env that steps in milliseconds."""
    def build(name, args):
        kw = tiny_env_kwargs(max_ratio=args.max_ratio)
        kw.update(reward_replicas=args.replicas, reward_reference=args.reference)
        return kw["dataset"], kw

    monkeypatch.setattr(results, "build_env_kwargs", build)


def test_loss_reaches_fixed_and_cem_rows_and_names_the_file(tiny_build, monkeypatch, tmp_path):
    seen, searched = [], []
    real_evaluate, real_search = tailmix.agents.evaluate.evaluate, tailmix.agents.cem.cem_search

    def evaluate(policy, env_kwargs, **kw):
        seen.append((policy.name, env_kwargs["loss"]))
        return real_evaluate(policy, env_kwargs, **kw)

    def cem_search(env_kwargs, **kw):
        searched.append((env_kwargs["loss"], kw["generations"], kw["population"], kw["episodes_per_candidate"]))
        return real_search(env_kwargs, **kw)

    monkeypatch.setattr(tailmix.agents.evaluate, "evaluate", evaluate)
    monkeypatch.setattr(tailmix.agents.cem, "cem_search", cem_search)
    results.main(["--datasets", "digits", "--algos", "cem", "--seeds", "2", "--loss", "logit_adjustment",
                  "--cem-generations", "2", "--cem-population", "3", "--cem-episodes", "1", "--out", str(tmp_path)])

    assert [p.name for p in tmp_path.iterdir()] == ["digits-lt-la.md"]
    losses = dict(seen)
    # No-synthetic rows keep their own losses; every row with synthetic data uses --loss.
    assert [l for name, l in seen if name == "none"] == ["ce", "logit_adjustment", "balanced_softmax",
                                                          "class_balanced"]
    assert {losses[n] for n in losses if n != "none"} == {"logit_adjustment"}
    assert "cem" in losses and "inverse" in losses
    assert searched == [("logit_adjustment", 2, 3, 1)]
    text = (tmp_path / "digits-lt-la.md").read_text()
    assert "| learned: CEM (val) |" in text and "static per-class ratio vector" in text
    assert "head loss `logit_adjustment`" in text and "CEM from `inverse`, final mean" in text


def test_default_loss_keeps_plain_names_and_credit_suffix(tiny_build, monkeypatch, tmp_path):
    monkeypatch.setattr(tailmix.agents.evaluate, "evaluate",
                        lambda policy, env_kwargs, seeds: [dict(r, policy=policy.name) for r in _fake_rows(seeds)])
    results.main(["--datasets", "digits", "--algos", "--seeds", "2", "--credit", "difference",
                  "--out", str(tmp_path)])
    results.main(["--datasets", "digits", "--algos", "--seeds", "2", "--loss", "class_balanced",
                  "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-lt-cb.md", "digits-lt-credit.md"]


def test_several_cem_starts_play_the_best_on_held_out_val(tiny_build, monkeypatch, tmp_path):
    import numpy as np

    played, scored = [], []
    real_search = tailmix.agents.cem.cem_search

    def val_fitness(actions, env_kwargs, seeds):
        scored.append((len(actions), list(seeds)))
        return np.array([[0.1] * len(seeds), [0.3] * len(seeds)])  # the second start wins

    def cem_search(env_kwargs, *, init_mean, **kw):
        res = real_search(env_kwargs, init_mean=init_mean, **kw)
        res.mean_action = np.full_like(res.mean_action, -1.0 if init_mean == "inverse" else 0.5)
        return res

    def evaluate(policy, env_kwargs, seeds):
        if policy.name == "cem":
            played.append(policy.action.copy())
        return [dict(r, policy=policy.name) for r in _fake_rows(seeds)]

    monkeypatch.setattr(tailmix.agents.cem, "val_fitness", val_fitness)
    monkeypatch.setattr(tailmix.agents.cem, "cem_search", cem_search)
    monkeypatch.setattr(tailmix.agents.evaluate, "evaluate", evaluate)
    results.main(["--datasets", "digits", "--algos", "cem", "--seeds", "2", "--cem-init", "inverse", "middle",
                  "--cem-generations", "1", "--cem-population", "2", "--cem-episodes", "1", "--cem-val-seeds", "3",
                  "--out", str(tmp_path)])
    assert scored == [(2, [1000, 1001, 1002])]
    assert len(played) == 1 and np.allclose(played[0], 0.5)
    text = (tmp_path / "digits-lt.md").read_text()
    assert "CEM from `middle` **played**" in text and "CEM from `inverse`," in text


def _fake_rows(seeds):
    return [{m: 0.5 for m in tailmix.agents.evaluate.METRICS} for _ in seeds]


def test_full_raises_cem_budget_and_bad_loss_is_refused(tiny_build, monkeypatch, tmp_path):
    with pytest.raises(SystemExit):
        results.main(["--datasets", "digits", "--loss", "focal", "--out", str(tmp_path)])
    got = {}
    monkeypatch.setattr(results, "run_dataset", lambda name, args: got.update(vars(args)) or "table")
    results.main(["--datasets", "digits", "--full", "--out", str(tmp_path)])
    assert (got["cem_generations"], got["cem_population"], got["cem_episodes"]) == (16, 24, 6)
    assert got["loss"] == "ce"


@pytest.mark.slow  # ~10 s: 22 policies x 2 episodes and a tiny schedule CEM on the digits-LT known-answer task
def test_known_answer_script_writes_the_gap_table(tmp_path):
    import benchmarks.known_answer as ka

    out = tmp_path / "ka.md"
    ka.main(["--quick", "--encoder", "random", "--no-schedules", "--learned", "cem:schedule", "--seeds", "2",
             "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    text = out.read_text()
    assert "| **oracle policy** | oracle |" in text and "| cem:schedule | learned |" in text
    assert "share of the gap" in text and "Commit: " in text and "decay:fill" not in text
    row = next(line for line in text.splitlines() if line.startswith("| **oracle policy**"))
    assert row.endswith("| 0.00 / 0.00 |")  # the corrupted classes get nothing


def test_known_answer_algo_kwargs_parse_and_reject_bad_items():
    from benchmarks.lib import parse_algo_kwargs

    assert parse_algo_kwargs(["learning_rate=1e-3", "n_steps=64"]) == {"learning_rate": 0.001, "n_steps": 64}
    assert parse_algo_kwargs(None) == {}
    with pytest.raises(ValueError, match="key=value"):
        parse_algo_kwargs(["learning_rate"])
    with pytest.raises(ValueError, match="number"):
        parse_algo_kwargs(["ent_coef=high"])


def test_known_answer_model_seed_lines_judge_every_seed():
    """The goal is met only if EVERY training seed reaches 70%: a good mean with one bad seed is 'not met'."""
    from benchmarks.known_answer import model_seed_lines

    rows = {f"ppo:x [model {m}]": ("learned", [{"val_balanced_accuracy": 0.9}]) for m in range(3)}
    goal = {"share": {"ppo:x [model 0]": 0.9, "ppo:x [model 1]": 0.95, "ppo:x [model 2]": 0.5}}
    (line,) = model_seed_lines(rows, goal, ["ppo:x"], 3)
    assert "mean 78%" in line and "min 50%" in line and "not met on every model seed" in line
    goal["share"]["ppo:x [model 2]"] = 0.7
    assert "met on every model seed" in model_seed_lines(rows, goal, ["ppo:x"], 3)[0]
    assert "not met" not in model_seed_lines(rows, goal, ["ppo:x"], 3)[0]


def _val_test_rows(vals_tests: dict) -> dict:
    return {k: ("learned", [{"val_balanced_accuracy": v, "test_balanced_accuracy": t}]) for k, (v, t) in
            vals_tests.items()}


def test_known_answer_select_on_val_picks_on_val_never_on_test():
    """The pick is the model of best VAL score even where another model has the better TEST score."""
    from benchmarks.known_answer import pick_on_val, select_on_val_rows

    rows = _val_test_rows({"ppo:x [model 0]": (0.92, 0.95), "ppo:x [model 1]": (0.94, 0.91),
                       "ppo:x [model 2]": (0.93, 0.96), "ppo:x [model 3]": (0.90, 0.99),
                       "ppo:x [model 4]": (0.91, 0.90), "ppo:x [model 5]": (0.91, 0.97)})
    assert pick_on_val(rows, ["ppo:x [model 0]", "ppo:x [model 1]", "ppo:x [model 2]"]) == "ppo:x [model 1]"
    # groups of 3 consecutive training seeds; a val tie goes to the lower seed (model 4, not the test-best 5)
    assert select_on_val_rows(rows, "ppo:x", 6, 3) == {"ppo:x [best of 3 on val, seeds 0-2]": "ppo:x [model 1]",
                                                       "ppo:x [best of 3 on val, seeds 3-5]": "ppo:x [model 4]"}


def test_known_answer_select_on_val_judges_every_group_and_rejects_bad_groups():
    from benchmarks.known_answer import check_select_on_val, select_on_val_lines

    rows = _val_test_rows({f"ppo:x [model {m}]": (0.9 + m / 100, 0.9) for m in range(4)})
    picks = {"ppo:x [best of 2 on val, seeds 0-1]": "ppo:x [model 1]",
             "ppo:x [best of 2 on val, seeds 2-3]": "ppo:x [model 3]"}
    share = {"ppo:x [model 0]": 0.2, "ppo:x [model 1]": 0.8, "ppo:x [model 2]": 0.9, "ppo:x [model 3]": 0.6}
    goal = {"share": dict(share, **{label: share[key] for label, key in picks.items()})}
    (line,) = select_on_val_lines(rows, goal, picks, "ppo:x", 2)
    assert "picks model 1 (val 0.910), share 80% (group mean 50%)" in line
    assert "not met in every group" in line and "min 60%" in line
    goal["share"]["ppo:x [best of 2 on val, seeds 2-3]"] = 0.7
    assert "**met in every group**" in select_on_val_lines(rows, goal, picks, "ppo:x", 2)[0]
    for model_seeds, k in ((4, 3), (2, 3), (3, 0)):
        with pytest.raises(ValueError, match="multiple of K"):
            check_select_on_val(model_seeds, k)
    check_select_on_val(9, 3)


@pytest.mark.slow
def test_known_answer_script_adds_the_val_pick_row(tmp_path):
    """End to end: the `[best of 2 on val]` row repeats the row of the model with the higher val score."""
    import benchmarks.known_answer as ka

    out = tmp_path / "ka.md"
    ka.main(["--quick", "--encoder", "random", "--no-schedules", "--learned", "ppo:shared:difference:64",
             "--select-on-val", "2", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    cells = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in out.read_text().splitlines()
             if line.startswith("| ppo:")}
    models = [cells[f"ppo:shared:difference:64 [model {m}]"] for m in (0, 1)]
    pick = cells["ppo:shared:difference:64 [best of 2 on val, seeds 0-1]"]
    best = max(models, key=lambda c: float(c[2].split(" ± ")[0]))  # column 2: val bal. acc.
    assert pick == best
    assert "best of 2 on val, per group of 2 training seeds: seeds 0-1: picks model" in out.read_text()


def test_known_answer_train_env_kwargs_are_env_settings():
    from benchmarks.lib import parse_train_env_kwargs

    assert parse_train_env_kwargs(["reward_replicas=4"]) == {"reward_replicas": 4}
    assert parse_train_env_kwargs(None) == {}
    with pytest.raises(ValueError, match="not an env setting"):
        parse_train_env_kwargs(["learning_rate=1e-3"])
    with pytest.raises(ValueError, match="--train-env-kwargs"):
        parse_train_env_kwargs(["reward_replicas"])

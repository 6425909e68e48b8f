"""benchmarks/: experiments as data (one folder per question with config.toml and its results), one runner and
shared helpers (benchmarks/lib.py), scripts that import no other script, and one policy-spec grammar."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import benchmarks.lib as lib

BENCHMARKS = Path(lib.__file__).resolve().parent
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py"))
NAMES = {p.stem for p in SCRIPTS}


def test_no_script_edits_sys_path():
    """Scripts run as ``python -m benchmarks.<script>``: nothing puts a folder on sys.path by hand."""
    offenders = [p.name for p in SCRIPTS if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()]
    assert not offenders, f"sys.path edited in {offenders}; run the script as python -m benchmarks.<script>"


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            yield node.module or "", [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_scripts_import_only_the_shared_module_and_no_privates():
    """A script imports from benchmarks.lib only (never another script, never a ``_private`` name)."""
    bad = []
    for path in SCRIPTS:
        for module, names in _imports(path):
            top = module.split(".")
            if top[0] in NAMES - {"lib"} or (top[0] == "benchmarks" and len(top) > 1 and top[1] != "lib"):
                bad.append(f"{path.name}: import {module}")
            if module == "benchmarks" and any(n != "lib" for n in names):
                bad.append(f"{path.name}: from benchmarks import {names}")
            if module == "benchmarks.lib" and any(n.startswith("_") for n in names):
                bad.append(f"{path.name}: private {names} from benchmarks.lib")
    assert not bad, "\n".join(bad)


def test_every_result_file_is_listed_with_a_command_and_a_commit():
    exps = lib.experiments()
    assert exps and not (BENCHMARKS / "results").exists()
    assert not lib.unlisted_files(), f"files no config.toml lists: {lib.unlisted_files()}"
    for name, exp in exps.items():
        assert exp["question"].endswith("?") and (Path(lib.REPO) / "docs" / exp["page"]).is_file()
        for entry in exp["result"]:
            assert (BENCHMARKS / name / entry["file"]).is_file(), f"{name}/{entry['file']} is missing"
            assert len(entry["commit"]) >= 7 and lib.result_commands(entry), f"{name}/{entry['file']}"
            for text in lib.result_commands(entry):
                _, script, _ = lib.parse_command(text)
                assert script in NAMES, f"{name}/{entry['file']}: no script benchmarks/{script}.py"


def test_the_committed_index_is_what_the_configs_generate():
    assert lib.INDEX.read_text() == lib.index_text(), "docs/experiments.md is stale: run python -m benchmarks index"


def test_the_runner_runs_an_experiments_commands(monkeypatch):
    import benchmarks.schedules as schedules

    calls = []
    monkeypatch.setattr(schedules, "main", lambda argv: calls.append(argv) or 0)
    logged = []
    assert lib.run("what-are-schedules-worth", dry_run=True, log=logged.append) == 0 and not calls
    assert logged == ["[what-are-schedules-worth] schedules-digits-lt.md: python -m benchmarks.schedules "
                      "--cache-dir /work/cache"]
    lib.run("benchmarks/what-are-schedules-worth/", ["schedules-digits-lt.md"], log=logged.append)
    assert calls == [["--cache-dir", "/work/cache"]]
    lib.run("what-are-schedules-worth", cache_dir="/tmp/c", log=logged.append)
    assert calls[-1] == ["--cache-dir", "/tmp/c"] and logged[-1].endswith("python -m benchmarks.schedules --cache-dir /tmp/c")
    with pytest.raises(ValueError, match="python -m benchmarks list"):
        lib.run("no-such-question")
    with pytest.raises(ValueError, match="no result file"):
        lib.run("what-are-schedules-worth", ["x.md"])
    with pytest.raises(ValueError, match="run it by hand"):
        lib.parse_command("python benchmarks/x.py")
    assert lib.main(["index", "--check"]) == 0


def test_result_commands_name_the_module_form():
    assert lib.command("known_answer", ["--learned", "cem:static", "--out", "a b.md"]) == \
        "python -m benchmarks.known_answer --learned cem:static --out 'a b.md'"


# -- one policy-spec grammar (tailmix.policies) ------------------------------------------------------------------
def test_fixed_policy_reads_the_scaled_shapes_the_tables_name():
    from tailmix.agents.baselines import FillToHead
    from tailmix.policies import ScaledBaseline, fixed_policy, load_policy

    counts = np.array([100.0, 20.0, 5.0])
    half = fixed_policy("fill x 0.5")
    assert isinstance(half, ScaledBaseline) and half.name == "fill x 0.5"
    assert np.allclose(half.raw_ratios(counts), 0.5 * FillToHead().raw_ratios(counts))
    assert load_policy("fill x 0.25").name == "fill x 0.25" and fixed_policy("fill").name == "fill"
    static = lib.static_specs()  # the labels of the committed tables
    assert static == ("none", "constant:0.5", "constant:1", "constant:2", "constant:4", "constant:8", "fill", "inverse",
                      "fill x 0.25", "fill x 0.5")
    assert [fixed_policy(s).name for s in static] == list(static)
    for bad in ("fill x half", "random x 2", "fill x -1"):
        with pytest.raises(ValueError, match="<shape> x <factor>"):
            fixed_policy(bad)


def test_training_specs_parse_in_one_place():
    from tailmix.policies import TrainingSpec, parse_training_spec, training_env_kwargs

    assert parse_training_spec("ppo:central:ref0:20000@1") == TrainingSpec("ppo", "central", "ref0", 20000, 1)
    assert parse_training_spec("sac:shared:difference") == TrainingSpec("sac", "shared", "difference")
    assert parse_training_spec("cem:schedule") == TrainingSpec("cem", "schedule")
    for bad in ("ppo:shared", "dqn:shared:plain", "ppo:shared:other", "ppo:shared:plain:x", "ppo:shared:plain@",
                "cem:static@1", "cem:other"):
        with pytest.raises(ValueError, match="algo:wrapper:variant"):
            parse_training_spec(bad)
    assert training_env_kwargs({"a": 1}, "difference") == {"a": 1, "credit": "difference"}
    assert training_env_kwargs({}, "ref0") == {"reward_reference": 0.0} and training_env_kwargs({}, "plain") == {}


def test_no_script_parses_policy_specs_of_its_own():
    """The known-answer table and the leaderboard read rows through tailmix.policies (no second grammar)."""
    for name in ("known_answer", "leaderboard", "schedules"):
        text = (BENCHMARKS / f"{name}.py").read_text()
        assert "class ScaledBaseline" not in text and "spec.partition(" not in text and "body.split(" not in text


def test_benchmark_fixed_lists_read_the_baseline_registry():
    """A baseline registered once (``register_baseline``) reaches every benchmark's fixed rows."""
    from tailmix.agents.baselines import FillToHead, register_baseline, unregister_baseline

    @register_baseline("half-fill-test")
    class HalfFill(FillToHead):
        name = "half-fill-test"

        def raw_ratios(self, train_counts):
            return 0.5 * super().raw_ratios(train_counts)

    try:
        assert "half-fill-test" in lib.fixed_specs()  # results.py and headroom.py play these
        assert "half-fill-test" in lib.static_specs()  # known_answer.py and the leaderboard play these
    finally:
        unregister_baseline("half-fill-test")
    assert "half-fill-test" not in lib.static_specs()


def test_scripts_default_to_the_clis_cache_folder(monkeypatch, tmp_path):
    """One default cache folder: a benchmark finds what a CLI run cached (no second ``.tailmix_cache``)."""
    monkeypatch.setenv("TAILMIX_CACHE_DIR", str(tmp_path))
    assert lib.default_cache() == str(tmp_path)
    assert not [p.name for p in SCRIPTS if ".tailmix_cache" in p.read_text()]

"""Installed, tailmix is one namespace: a user's own ``envs/`` or ``agents/`` package cannot shadow it."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_a_users_own_envs_and_agents_packages_do_not_shadow_tailmix(tmp_path):
    """An RL project with its own envs/ and agents/ (most have them) still gets tailmix's registered envs."""
    for name in ("envs", "agents", "generators", "classifiers"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"OWNER = 'user'\nNAME = {name!r}\n")
    out = _run("""
        import envs, agents
        assert envs.OWNER == agents.OWNER == 'user'          # the user's packages are the top-level ones
        import gymnasium, pettingzoo, tailmix
        from tailmix.envs.central import SyntheticRatioCentralEnv
        from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
        kw = dict(dataset='digits', encoder='random', max_steps=2, pool_size=8)
        g = gymnasium.make('tailmix/SyntheticRatioCentral-v0', **kw)
        assert isinstance(g.unwrapped, SyntheticRatioCentralEnv)
        p = pettingzoo.make('parallel', 'tailmix/SyntheticRatio-v0', **kw)
        assert isinstance(p, SyntheticRatioEnv)
        obs, _ = g.reset(seed=0)
        assert envs.OWNER == 'user' and tailmix.envs.__name__ == 'tailmix.envs'
        print('ok', obs.shape)
    """, cwd=tmp_path)
    assert out.startswith("ok")


@pytest.mark.slow
def test_a_non_editable_install_holds_only_tailmix_at_top_level(tmp_path):
    """The wheel's top level is ``tailmix/`` and its dist-info; installed from it, every sub-package imports."""
    wheels = tmp_path / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(wheels), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = wheels.glob("tailmix-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"tailmix"}, top
    for module in ("envs/core.py", "agents/sb3.py", "generators/ddpm.py", "classifiers/losses.py", "train_agents.py",
                   "pipeline.py", "io/atomic.py", "io/leakage.py"):
        assert f"tailmix/{module}" in names
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _run("""
        import sys
        sys.path = [p for p in sys.path if '__editable__' not in p]
        sys.meta_path = [f for f in sys.meta_path if '__editable__' not in type(f).__module__
                         and '__editable__' not in getattr(f, '__name__', '')]
        import tailmix, tailmix.envs.core, tailmix.agents.sb3, tailmix.train_agents, tailmix.io.leakage, gymnasium
        print(tailmix.envs.core.__file__)
        print(gymnasium.spec('tailmix/SyntheticRatioCentral-v0').entry_point)
    """, cwd=elsewhere, env=env)
    core_file, entry = out.split()
    assert core_file.startswith(str(target)), core_file
    assert entry.startswith("tailmix.envs."), entry

"""The env on machines without a GPU: ``"auto"`` falls back to the CPU, naming a GPU is a clear ValueError.

One test hides every GPU from a fresh interpreter (``CUDA_VISIBLE_DEVICES=""``), so it means the same on
a CPU-only CI runner and on a GPU machine; the others simulate missing or too few GPUs by patching
``torch.cuda``. A last test runs the env on a real GPU when there is one.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tailmix.classifiers.device import autocast, autocast_dtype, select_device
from tailmix.envs.central import SyntheticRatioCentralEnv
from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
from tailmix.envs.vector import SyntheticRatioVectorEnv
from tests.conftest import make_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(encoder="random", pool_size=8, max_steps=2, epochs_per_step=1)

NO_GPU_SCRIPT = textwrap.dedent("""
    import numpy as np, torch
    torch.set_num_threads(1)
    assert not torch.cuda.is_available(), "CUDA_VISIBLE_DEVICES='' should hide every GPU"
    from tailmix.classifiers.device import select_device, visible_devices
    assert select_device("auto") == torch.device("cpu")
    assert visible_devices() == [torch.device("cpu")]
    from tests.conftest import make_tiny_dataset
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
    from tailmix.envs.vector import SyntheticRatioVectorEnv
    fast = dict(encoder="random", pool_size=8, max_steps=2, epochs_per_step=1)
    for mode in ("feature", "pixel"):
        env = SyntheticRatioEnv(dataset=make_tiny_dataset(), mode=mode, device="auto", **fast)
        obs, _ = env.reset(seed=0)
        while env.agents:
            obs, rew, _, _, _ = env.step({a: np.ones(1, np.float32) for a in env.agents})
            assert all(np.isfinite(o).all() and env.observation_space(a).contains(o) for a, o in obs.items())
        for device in ("cuda", "cuda:0"):
            try:
                SyntheticRatioEnv(dataset=make_tiny_dataset(), mode=mode, device=device, **fast)
            except ValueError as err:
                assert "CUDA is not available" in str(err) and "cpu" in str(err), err
            else:
                raise SystemExit(f"device={device!r} without CUDA was accepted")
    venv = SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), device="auto", **fast)
    venv.reset(seed=0)
    obs, *_ = venv.step(np.zeros((2, 3), np.float32))
    assert venv.observation_space.contains(obs)
    print("NO_GPU_OK")
""")


@pytest.mark.slow  # a fresh interpreter imports torch and the env: several seconds on a busy 2-core CPU
def test_env_builds_and_steps_with_every_gpu_hidden():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", NO_GPU_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "NO_GPU_OK" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture
def no_cuda(monkeypatch):
    """This process behaves as if it had no CUDA at all (even on a GPU machine)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_select_device_without_cuda(no_cuda):
    assert select_device("auto") == torch.device("cpu")
    assert select_device(" AUTO ") == torch.device("cpu")
    assert select_device("cpu") == torch.device("cpu")
    for device in ("cuda", "cuda:0", torch.device("cuda", 1)):
        with pytest.raises(ValueError, match="CUDA is not available.*visible devices: cpu.*'cpu' or 'auto'"):
            select_device(device)
    for device in ("gpu", "cuda:x", "", None):
        with pytest.raises(ValueError):
            select_device(device)
    assert autocast_dtype("cpu") is None
    with autocast("cpu"):  # a null context: full precision on the CPU
        assert torch.ones(2).sum().dtype == torch.float32


@pytest.mark.parametrize("make", [
    lambda **kw: SyntheticRatioEnv(dataset=make_tiny_dataset(), **kw),
    lambda **kw: SyntheticRatioEnv(dataset=make_tiny_dataset(), mode="pixel", **kw),
    lambda **kw: SyntheticRatioCentralEnv(dataset=make_tiny_dataset(), **kw),
    lambda **kw: SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), **kw),
], ids=["parallel", "pixel", "central", "vector"])
def test_every_view_refuses_cuda_clearly_and_accepts_auto(no_cuda, make):
    with pytest.raises(ValueError, match="device 'cuda:0' asked for CUDA, but CUDA is not available"):
        make(device="cuda:0", **FAST)
    env = make(device="auto", **FAST)
    env.reset(seed=0)


def test_a_gpu_index_that_does_not_exist(monkeypatch):
    """With one GPU visible, 'cuda:3' is refused before anything touches CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="'cuda:3' does not exist: 1 CUDA device"):
        select_device("cuda:3")
    with pytest.raises(ValueError, match="does not exist"):
        SyntheticRatioEnv(dataset=make_tiny_dataset(), device="cuda:3", **FAST)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["feature", "pixel"])
def test_env_on_a_real_gpu(mode):
    def run(device):
        env = SyntheticRatioEnv(dataset=make_tiny_dataset(), mode=mode, device=device, **{**FAST, "max_steps": 3})
        obs, _ = env.reset(seed=0)
        out = [np.stack(list(obs.values()))]
        while env.agents:
            obs, *_ = env.step({a: np.full(1, 0.5, np.float32) for a in env.agents})
            assert all(env.observation_space(a).contains(o) for a, o in obs.items())
            out.append(np.stack(list(obs.values())))
        return np.stack(out)

    gpu, cpu = run("cuda:0"), run("cpu")
    assert np.isfinite(gpu).all()
    # Metrics may differ by float summation order; ratios, counts, quality, progress and ids may not.
    same = [3, 4, 5, 7] + list(range(8, gpu.shape[-1]))
    assert np.array_equal(gpu[..., same], cpu[..., same])
    venv = SyntheticRatioVectorEnv(2, dataset=make_tiny_dataset(), device="cuda:0", **FAST)
    venv.reset(seed=0)
    obs, *_ = venv.step(np.zeros((2, 3), np.float32))
    assert venv.observation_space.contains(obs)

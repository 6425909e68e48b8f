"""The pretrained kind and --unlabeled in the application layer and the CLI (issue 28 items 1 and 3)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_pipeline_guidance import _folders, _settings, _write_pngs
from tests.test_preflight import refused
from tests.test_train_agents import assert_user_error, run_cli


@pytest.fixture(scope="module")
def digits():
    from tailmix.envs.datasets import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from tailmix.generators.pretrained import write_tiny_pipeline

    return write_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "latent", "latent")


@pytest.mark.slow
def test_the_main_job_runs_end_to_end_on_a_local_pipeline(pipeline, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    proc = run_cli("--quick", "--generator", "pretrained", "--pretrained", pipeline, "--generator-steps", "2",
                   "--per-class", "4", "--no-filter", "--max-steps", "2", "--seeds", "1", "--timesteps", "32",
                   "--device", "cpu", "--cache-dir", cache, "--run-dir", run)
    assert "[generator pretrained (tiny)] done" in proc.stdout and (run / "results.csv").is_file()
    (entry,) = _folders(cache)
    assert entry.startswith("pretrained-") and (cache / "generators" / entry / "adapters").is_dir()
    assert len([p for p in (cache / "banks").iterdir() if p.is_dir()]) == 1


def test_the_generator_is_cached_by_the_pipelines_fingerprint(pipeline, digits, tmp_path):
    import shutil

    from tailmix.pipeline import fitted_generator

    first = fitted_generator(_settings(tmp_path, generator="pretrained", pretrained=str(pipeline)), digits,
                             progress=False)
    moved = shutil.copytree(pipeline, tmp_path / "moved")
    again = fitted_generator(_settings(tmp_path, generator="pretrained", pretrained=str(moved)), digits, progress=False)
    assert again.config() == first.config() and len(_folders(tmp_path)) == 1  # same model elsewhere: same entry


@pytest.mark.parametrize("argv, words", [
    (["--generator", "pretrained"], ["pretrained generator needs", "--pretrained PATH"]),
    (["--generator", "pretrained", "--pretrained", "{tmp}/nowhere"], ["--pretrained", "no such folder"]),
    (["--generator", "ddpm", "--pretrained", "{tmp}"], ["--pretrained is a setting of --generator pretrained"]),
    (["--generator", "ddpm", "augment", "--unlabeled", "{tmp}/u"], ["--unlabeled", "augment (it trains nothing"]),
    (["--generator", "sketch", "--unlabeled", "{tmp}/u"], ["--unlabeled", "sketch (", "edge map"]),
    (["--generator", "pretrained", "--pretrained", "{pipe}", "--unlabeled", "{tmp}/u"],
     ["--unlabeled", "pretrained (its pipeline is pretrained already"]),
])
def test_bad_combinations_are_one_line_errors(argv, words, pipeline, capsys, tmp_path):
    _write_pngs(tmp_path / "u", 3, np.random.default_rng(0))
    argv = [a.format(tmp=tmp_path, pipe=pipeline) for a in argv]
    line = refused(capsys, tmp_path, "generate", *argv)
    assert all(w in line for w in words), line


def test_the_lora_kind_pretrains_its_base_on_unlabeled_images(digits, tmp_path):
    from tailmix.pipeline import fitted_generator

    _write_pngs(tmp_path / "u", 5, np.random.default_rng(0))
    gen = fitted_generator(_settings(tmp_path / "c", generator="lora", unlabeled=str(tmp_path / "u")), digits,
                           progress=False)
    assert gen.base.config()["fit"]["unlabeled"]["count"] == 5  # was silently ignored before issue 28


def test_lora_refuses_unlabeled_images_for_a_base_fitted_already():
    import torch

    from tailmix.generators.ddpm import ClassConditionalDDPM
    from tailmix.generators.lora import LoRAClassAdapters
    from tests.conftest import make_tiny_dataset

    ds = make_tiny_dataset()
    base = ClassConditionalDDPM(ds.image_shape, ds.num_classes, preset="tiny").fit(ds, generator=torch.Generator())
    with pytest.raises(ValueError, match="fitted already"):
        LoRAClassAdapters(base, steps_per_class=1).fit(ds, unlabeled=ds.train_images)


def test_cli_unlabeled_error_is_a_real_process_one_liner(tmp_path):
    _write_pngs(tmp_path / "u", 3, np.random.default_rng(0))
    proc = run_cli("generate", "--generator", "augment", "--unlabeled", tmp_path / "u", "--run-dir", tmp_path / "r",
                   check=False)
    assert_user_error(proc, "--unlabeled", "augment")

"""benchmarks/gpu_generators.py runs the ddpm and pretrained kinds end to end on a device (here the CPU, tiny)."""
from __future__ import annotations

import pytest


@pytest.mark.slow
def test_the_device_script_runs_on_the_cpu_with_tiny_settings(capsys):
    import benchmarks.gpu_generators as script

    rows = script.main(["--device", "cpu", "--tiny"])
    assert [(r["kind"], r["device"]) for r in rows] == [("ddpm", "cpu"), ("pretrained", "cpu")]
    assert all(r["fit_images_per_s"] > 0 and r["sample_images_per_s"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "| kind | device | fit img/s | sample img/s | fit vs CPU | sample vs CPU |" in out
    assert out.count("| 1.00x | 1.00x |") == 2  # the CPU is its own baseline


def test_the_table_gives_each_device_row_its_ratio_to_the_cpu():
    from benchmarks.gpu_generators import table

    rows = [{"kind": "ddpm", "device": "cuda:0", "fit_images_per_s": 300.0, "sample_images_per_s": 50.0},
            {"kind": "ddpm", "device": "cpu", "fit_images_per_s": 100.0, "sample_images_per_s": 5.0}]
    assert "| ddpm | cuda:0 | 300.0 | 50.0 | 3.00x | 10.00x |" in table(rows)
    assert "n/a" in table(rows[:1])

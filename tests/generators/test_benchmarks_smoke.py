"""Smoke tests of benchmarks/generator_speed.py, benchmarks/filter_quality.py and benchmarks/guidance.py (tiny budgets,
in-process)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"tailmix_benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown rows whose first cell starts with ``first_cell``."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    return [r for r in rows if r[0].startswith(first_cell)]


TINY = ["--preset", "tiny", "--train-steps", "2", "--n", "2", "--device", "cpu"]


def test_generator_speed_tiny(tmp_path, capsys):
    bench = _load("generator_speed")
    out_json = tmp_path / "rows.json"
    rows = bench.main(TINY + ["--timesteps", "12", "--ks", "2", "4", "--classes", "0", "9", "--bank-quota", "0",
                              "--cache-dir", str(tmp_path / "cache"), "--json", str(out_json)])
    text = capsys.readouterr().out
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 2), ("ddim", 4), ("ddpm", 12)]
    for r in rows:
        assert r["images"] == 4  # n=2 x two classes
        assert math.isfinite(r["seconds"]) and r["seconds"] > 0
        assert math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0
        assert set(r["acceptance"]) == {0, 9}
        assert all(0.0 <= a <= 1.0 for a in r["acceptance"].values())
        assert 0.0 <= r["acceptance_mean"] <= 1.0 and 0.0 <= r["acceptance_tail"] <= 1.0
    assert rows[-1]["speedup"] == pytest.approx(1.0)
    assert rows[0]["speedup"] == pytest.approx(rows[0]["images_per_s"] / rows[-1]["images_per_s"])
    # the printed tables: one row per sampler, one per class (class 9 is the tail of {0, 9})
    printed = _table_rows(text, "ddim") + _table_rows(text, "ddpm")
    assert [r[:2] for r in printed] == [["ddim", "2"], ["ddim", "4"], ["ddpm", "12"]]
    assert all(math.isfinite(float(r[4])) for r in printed)  # images/s
    assert [r[0] for r in _table_rows(text, "0") + _table_rows(text, "9")] == ["0", "9 (tail)"]
    assert "command: python -m benchmarks.generator_speed" in text and "device: cpu" in text
    assert len(json.loads(out_json.read_text())["rows"]) == 3
    assert len(list((tmp_path / "cache" / "filters").iterdir())) == 1  # the CLI's cached reference filter


def test_generator_speed_reports_flops_against_the_matmul_peak_and_a_bank_fill_row(tmp_path, capsys):
    bench = _load("generator_speed")
    rows = bench.main(TINY + ["--timesteps", "12", "--ks", "2", "--classes", "0", "9", "--bank-quota", "3",
                              "--bank-batch", "2", "--matmul-size", "64", "--cache-dir", str(tmp_path / "cache")])
    text = capsys.readouterr().out
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 2), ("ddpm", 12), ("bank fill", 2)]
    per_step = rows[0]["flops_per_image"] / 2
    assert per_step > 0
    for r in rows:
        assert r["flops_per_image"] == pytest.approx(per_step * r["steps"])  # linear in the denoising steps
        assert r["flops_per_s"] == pytest.approx(r["flops_per_image"] * r["images_per_s"])
        assert 0 < r["peak_share"] == pytest.approx(r["flops_per_s"] / rows[0]["flops_per_s"] * rows[0]["peak_share"])
    bank = rows[-1]
    assert bank["images"] >= 2 * 3  # candidates tried: at least the quota of each of the two classes
    assert set(bank["acceptance"]) == {0, 9}
    assert "matmul peak:" in text and "% of matmul peak" in text
    assert [r[0] for r in _table_rows(text, "bank fill")] == ["bank fill"]


def test_class_labels_show_the_id_once():
    label = _load("generator_speed").class_label
    assert [label(c, ("0", "1")) for c in (0, 1)] == ["0", "1"]  # digits: the names are the ids
    assert label(2, ("0 no DR", "1 mild", "2 moderate NPDR")) == "2 moderate NPDR"  # RetinaMNIST
    assert label(1, ("benign", "malignant")) == "1 malignant"


def test_generator_speed_rejects_bad_flags(tmp_path):
    bench = _load("generator_speed")
    with pytest.raises(SystemExit):
        bench.main(["--ks", "0"])
    with pytest.raises(SystemExit):
        bench.main(TINY + ["--timesteps", "8", "--ks", "9"])  # DDIM cannot take more steps than T


def test_filter_quality_tiny(tmp_path, capsys):
    bench = _load("filter_quality")
    res = bench.main(TINY + ["--filter-epochs", "1", "--calibrations", "none", "logit_adjustment",
                             "--cache-dir", str(tmp_path / "cache")])
    text = capsys.readouterr().out
    classes = list(range(10))  # digits-LT
    assert res["calibrations"] == ["none", "logit_adjustment"]
    for kind in ("real", "generated"):
        for cal in res["calibrations"]:
            assert sorted(res[kind][cal]) == classes
            assert all(0.0 <= v <= 1.0 for v in res[kind][cal].values())
    assert all(math.isfinite(v) and v >= 0 for v in res["frechet_generated"].values())
    assert all(math.isfinite(v) and v >= 0 for v in res["frechet_real_val"].values())
    assert res["tail_classes"] == [9, 8, 7, 6, 5]  # the rarer half by train count
    summary = _table_rows(text, "none") + _table_rows(text, "logit_adjustment")
    assert len(summary) == 2 and all(cell.endswith("%") for row in summary for cell in row[1:4])
    per_class = [r for r in _table_rows(text, "") if r[0].split()[0].isdigit()]
    assert len(per_class) == 2 * len(classes)  # table (a) and table (b)
    assert all(math.isfinite(float(r[-1])) and math.isfinite(float(r[-2])) for r in per_class[len(classes):])
    # cached filters are reloaded, not retrained, and give the same numbers
    again = bench.main(TINY + ["--filter-epochs", "1", "--calibrations", "none", "logit_adjustment",
                               "--cache-dir", str(tmp_path / "cache")])
    assert again["real"] == res["real"] and again["generated"] == res["generated"]


def test_guidance_tiny(tmp_path, capsys):
    bench = _load("guidance")
    out = tmp_path / "guidance.md"
    res = bench.main(["--preset", "tiny", "--generator-steps", "2", "--n", "2", "--device", "cpu", "--filter-epochs",
                      "1", "--scales", "0.5", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert res["scales"] == [0.0, 0.5] and set(res["kept"][0.5]) == set(range(10))
    assert all(0 <= k <= 2 for k in res["kept"][0.0].values()) and res["speed"][0.5] > 0
    text = out.read_text()
    assert "command: `python -m benchmarks.guidance --preset tiny" in text
    assert [r[0] for r in _table_rows(text, "**")] == ["**class mean**", "**tail half**"]
    names = sorted(p.name for p in (tmp_path / "cache" / "generators").iterdir())
    assert len(names) == 2 and names[1].startswith("ddpm-guided-")  # the CLI's DDPM and its guided one, cached

"""benchmarks/perfect_generator.py: pool specs, the share of the oracle's gain, and the flags it refuses."""
from __future__ import annotations

import math

import numpy as np
import pytest

import benchmarks.perfect_generator as pg


def test_pool_specs_parse_with_types_and_bad_ones_say_what_is_accepted():
    assert pg.parse_pool("none") == {"kind": "none"}
    assert pg.parse_pool("bank:tau=0.9,steps=300") == {"kind": "bank", "tau": 0.9, "steps": 300}
    assert pg.parse_pool("bank:filter=0") == {"kind": "bank", "filter": 0}
    assert pg.parse_pool("bank:cfg=1,ddim=50") == {"kind": "bank", "cfg": 1.0, "ddim": 50}
    for bad, words in (("gan", "unknown pool"), ("bank:lr=1", "key=value"), ("bank:steps=many", "needs a int"),
                       ("oracle:tau=1", "unknown pool"), ("bank:mix=300,mixseed=1", "one of mix"),
                       ("bank:gseeds=0", "gseeds"), ("bank:gseeds=2,gseed=1", "gseeds")):
        with pytest.raises(ValueError, match=words):
            pg.parse_pool(bad)


def test_settings_carry_the_overrides_into_the_cli_config():
    args = pg.argparse.Namespace(preset="small", per_class=128, cache_dir="c")
    cfg = pg.settings(pg.parse_pool("bank:filter=0,guidance=0.5,steps=300"), args)
    assert (cfg.filter, cfg.guidance_scale, cfg.generator_steps, cfg.tau) == (False, 0.5, 300, 0.5)
    assert pg.settings(pg.parse_pool("bank"), args).generator_steps is None  # the preset's default


def test_table_gives_each_pool_its_share_between_none_and_oracle():
    nan = math.nan
    rows = [dict(pool="none", mean=0.90, std=0.01, val=0.80, frechet=nan, acceptance=nan, train_s=nan,
                 train_steps=""),
            dict(pool="oracle", mean=0.94, std=0.01, val=0.90, frechet=1.0, acceptance=nan, train_s=nan,
                 train_steps=""),
            dict(pool="bank", mean=0.91, std=0.02, val=0.85, frechet=3.0, acceptance=0.9, train_s=120.0,
                 train_steps="200 + 1000")]
    text = pg.format_table(rows)
    bank = [line for line in text.splitlines() if line.startswith("| bank")][0]
    assert "| 25% | 0.850 | 50% |" in bank and "90.0%" in bank and "| 2.0 |" in bank
    assert "| oracle (left-out real images) | 0.940 ± 0.010 | - |" in text


def test_refuses_a_table_without_its_two_ends(capsys):
    with pytest.raises(SystemExit):
        pg.main(["--pools", "bank", "oracle"])
    assert "must include 'none'" in capsys.readouterr().err


def test_ema_pools_train_their_own_cached_generator_beside_the_clis(tmp_path):
    from tailmix import pipeline

    assert pg.parse_pool("bank:steps=300,ema=0.999") == {"kind": "bank", "steps": 300, "ema": 0.999}
    args = pg.argparse.Namespace(preset="tiny", per_class=4, cache_dir=str(tmp_path))
    cfg = pg.settings(pg.parse_pool("bank:ema=0.9"), args)
    dataset = pipeline.load_data(cfg)
    gen = pg.own_generator(cfg, dataset, 0.9)
    assert gen.ema_decay == 0.9 and gen.raw_state is not None  # trained here, with the average
    again = pg.own_generator(cfg, dataset, 0.9)
    assert again.raw_state is None and again.config() == gen.config()  # loaded from the cache
    plain = pipeline.fitted_generator(cfg, dataset, progress=False)
    assert "ema_decay" not in plain.config() and len(list((tmp_path / "generators").iterdir())) == 2
    with pytest.raises(ValueError, match="unguided"):
        pg.own_generator(pg.settings(pg.parse_pool("bank:guidance=0.5"), args), dataset, 0.9)
    seeded = pg.own_generator(cfg, dataset, seed=1)  # another training seed: another model, cached apart
    assert seeded.config()["fit"]["seed"] == 1 and "ema_decay" not in seeded.config()
    assert seeded.config()["fit"]["state_digest"] != plain.config()["fit"]["state_digest"]
    assert len(list((tmp_path / "generators").iterdir())) == 3


class FakeBank:
    def __init__(self, value: int, counts: list[int]) -> None:
        self.manifest = {"num_classes": len(counts), "generator_configs": {"ddpm": {}}}
        self.value, self.counts = value, counts

    def images(self, c):
        return np.full((self.counts[c], 2, 2, 1), self.value, np.uint8)

    def quality(self, c):
        return self.value / 10


def test_a_mixed_bank_takes_half_of_each_class_from_each_generator():
    source = pg.mixed_source([FakeBank(1, [8, 3]), FakeBank(2, [8, 8])], per_class=8)
    assert source.pool(0)[:, 0, 0, 0].tolist() == [1] * 4 + [2] * 4
    assert source.pool(1)[:, 0, 0, 0].tolist() == [1] * 3 + [2] * 5  # the first bank is short: the second tops up
    assert source.quality(0) == pytest.approx(0.15)
    assert pg.parse_pool("bank:steps=100,ema=0.999,mix=300") == {"kind": "bank", "steps": 100, "ema": 0.999,
                                                                 "mix": 300}

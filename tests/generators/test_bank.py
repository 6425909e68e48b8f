"""The on-disk bank: keys, round trip, determinism, resumption, corruption, mismatches and draws."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tailmix.generators.bank import BankError, SyntheticBank, bank_key
from tailmix.generators.filter import ClassifierFilter
from tailmix.generators.pool import GeneratorPool, derive_seed
from tests.generators.fakes import FakeGenerator, code_scorer

QUOTAS = [7, 5, 3]


def fill(dataset, root, gen=None, **kwargs):
    gen = gen or FakeGenerator()
    pool = GeneratorPool({"fake": gen}, devices="cpu").fit(dataset)
    kwargs = {"per_class": QUOTAS, "seed": 0, "shard_size": 3, "batch_size": 2, "progress": False, **kwargs}
    return pool.fill_bank(dataset, root, **kwargs)


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


# -- keys ----------------------------------------------------------------------------------------------
def test_bank_key_is_stable_and_covers_every_input():
    base = dict(dataset_fingerprint="abc", generator_configs={"g": {"kind": "fake", "a": 1, "b": 2}},
                filter_config=None, seed=0, per_class=[3, 2])
    key = bank_key(**base)
    assert len(key) == 16 and int(key, 16) >= 0
    assert bank_key(**{**base, "generator_configs": {"g": {"b": 2, "a": 1, "kind": "fake"}}}) == key  # key order
    for change in ({"dataset_fingerprint": "abd"}, {"generator_configs": {"g": {"kind": "fake", "a": 2, "b": 2}}},
                   {"filter_config": {"kind": "classifier", "tau": 0.5}}, {"seed": 1}, {"per_class": [3, 3]}):
        assert bank_key(**{**base, **change}) != key, change
    assert bank_key(**base, sampling={"shard_size": 4}) != key
    with pytest.raises(ValueError, match="JSON"):
        bank_key(**{**base, "generator_configs": {"g": {"x": object()}}})
    with pytest.raises(ValueError, match="per_class"):
        bank_key(**{**base, "per_class": [-1]})


# -- round trip ------------------------------------------------------------------------------------------
def test_round_trip(tiny_dataset, tmp_path):
    gen = FakeGenerator()
    bank = fill(tiny_dataset, tmp_path, gen)
    assert bank.path.parent == tmp_path and bank.path.name == bank.key and bank.complete
    reopened = SyntheticBank.open(bank.path)
    assert reopened.counts().tolist() == QUOTAS
    assert reopened.image_shape == tiny_dataset.image_shape and reopened.num_classes == 3
    m = reopened.manifest
    assert m["per_class"] == QUOTAS and m["num_classes"] == 3 and m["filter_config"] is None
    assert m["generator_configs"] == {"fake": gen.config()} and m["dataset_fingerprint"] == tiny_dataset.fingerprint()
    assert [len(m["classes"][str(c)]["shards"]) for c in range(3)] == [3, 2, 1]  # shard_size 3
    for c in range(3):
        imgs = reopened.images(c)
        assert imgs.dtype == np.uint8 and imgs.shape == (QUOTAS[c], 8, 8, 1)
        assert np.isnan(reopened.confidences(c)).all() and reopened.quality(c) == 1.0
        meta = reopened.metadata(c)
        assert set(meta["generator"]) == {"fake"} and len(meta["seed"]) == QUOTAS[c]
        # each shard is what its own seeded generator gives: regenerate it independently
        for shard in m["classes"][str(c)]["shards"]:
            assert shard["seed"] == derive_seed(0, c, shard["index"])
            g = torch.Generator().manual_seed(shard["seed"])
            parts, left = [], shard["quota"]
            while left:
                parts.append(gen.sample(c, min(2, left), generator=g))
                left -= len(parts[-1])
            start = 3 * shard["index"]
            np.testing.assert_array_equal(imgs[start:start + shard["count"]], np.concatenate(parts))
    assert not list(bank.path.glob(".*.tmp"))
    # filling again with the same arguments reuses the bank without sampling
    again = FakeGenerator()
    assert fill(tiny_dataset, tmp_path, again).key == bank.key and again.calls == []


def test_same_seed_same_bytes_other_seed_other_bank(tiny_dataset, tmp_path):
    a = fill(tiny_dataset, tmp_path / "a")
    b = fill(tiny_dataset, tmp_path / "b")
    c = fill(tiny_dataset, tmp_path / "c", seed=1)
    assert a.key == b.key and folder_bytes(a.path) == folder_bytes(b.path)
    assert c.key != a.key
    assert not np.array_equal(a.images(0), c.images(0))


def test_filtered_bank_records_acceptance(tiny_dataset, tmp_path):
    filt = ClassifierFilter(code_scorer(3), tau=0.5, max_tries=30, name="codes")
    bank = fill(tiny_dataset, tmp_path, FakeGenerator(wrong_rate=0.3), filter=filt, per_class=[6, 6, 6])
    assert bank.counts().tolist() == [6, 6, 6] and bank.filtered
    m = bank.manifest
    assert m["filter_config"] == filt.config()
    for c in range(3):
        entry = m["classes"][str(c)]
        assert entry["tried"] >= 6 and entry["acceptance"] == pytest.approx(entry["accepted"] / entry["tried"])
        assert 0.0 < bank.quality(c) < 1.0 and bank.quality(c) == pytest.approx(entry["acceptance"])
        conf = bank.confidences(c)
        assert conf.dtype == np.float32 and np.all(conf >= 0.5)
        assert entry["mean_confidence"] == pytest.approx(float(conf.mean()), rel=1e-6)
        assert bank.quality(c, "confidence") == pytest.approx(float(conf.mean()), rel=1e-6)
        assert np.all(bank.images(c)[:, 0, 0, 0] == c)  # only correctly coded samples were kept
    np.testing.assert_allclose(bank.acceptance, [m["classes"][str(c)]["acceptance"] for c in range(3)])


def test_a_filter_that_rejects_everything_leaves_an_empty_class(tiny_dataset, tmp_path):
    filt = ClassifierFilter(code_scorer(3), tau=0.5, max_tries=2, name="codes")
    bank = fill(tiny_dataset, tmp_path, FakeGenerator(wrong_rate=1.0), filter=filt, per_class=[4, 0, 2])
    assert bank.complete and bank.counts().tolist() == [0, 0, 0]
    assert bank.images(0).shape == (0, 8, 8, 1) and bank.quality(0) == 0.0 and bank.quality(1) == 1.0
    with pytest.raises(ValueError, match="no images"):
        bank.draw(0, 1, np.random.default_rng(0))
    assert bank.draw(0, 0, np.random.default_rng(0)).shape == (0, 8, 8, 1)


# -- resumption and corruption ------------------------------------------------------------------------
def test_interrupted_fill_resumes_byte_identical(tiny_dataset, tmp_path):
    reference = fill(tiny_dataset, tmp_path / "ref")
    crashing = FakeGenerator(fail_after=4)  # 2 calls per full shard at batch 2: dies in shard 2
    with pytest.raises(RuntimeError, match="on purpose"):
        fill(tiny_dataset, tmp_path / "run", crashing)
    folder = tmp_path / "run" / reference.key
    partial = json.loads((folder / "manifest.json").read_text())
    assert partial["complete"] is False
    assert [s["index"] for s in partial["classes"]["0"]["shards"]] == [0, 1]
    with pytest.raises(BankError, match="incomplete"):
        SyntheticBank.open(folder)
    assert SyntheticBank.open(folder, allow_incomplete=True).counts().tolist() == [6, 0, 0]
    healthy = FakeGenerator()
    resumed = fill(tiny_dataset, tmp_path / "run", healthy)
    assert resumed.key == reference.key and resumed.complete
    # only the 4 missing shards were sampled (1 of class 0, 2 of class 1, 1 of class 2)
    assert sorted({c for c, _ in healthy.calls}) == [0, 1, 2] and sum(n for _, n in healthy.calls) == 1 + 5 + 3
    assert folder_bytes(resumed.path) == folder_bytes(reference.path)


def test_corrupt_shard_is_detected_and_refilled(tiny_dataset, tmp_path):
    bank = fill(tiny_dataset, tmp_path)
    original = folder_bytes(bank.path)
    shard = bank.path / "class_1_0.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF  # flip a pixel byte
    shard.write_bytes(bytes(raw))
    with pytest.raises(BankError, match="class 1 shard 0.*checksum"):
        bank.verify()
    with pytest.raises(BankError, match="corrupt"):
        SyntheticBank.open(bank.path)
    SyntheticBank.open(bank.path, verify=False)  # opening without verification is the caller's choice
    gen = FakeGenerator()
    with pytest.warns(UserWarning, match="refilling 1 bad shard"):
        refilled = fill(tiny_dataset, tmp_path, gen)
    assert gen.calls == [(1, 2), (1, 1)]  # only that shard
    assert folder_bytes(refilled.path) == original
    SyntheticBank.open(refilled.path)


def test_missing_shard_and_truncated_file_are_refilled(tiny_dataset, tmp_path):
    bank = fill(tiny_dataset, tmp_path)
    original = folder_bytes(bank.path)
    (bank.path / "class_0_2.npy").unlink()
    (bank.path / "class_2_0.conf.npy").write_bytes(b"\x93NUMPY")
    assert {(c, s) for c, s, _ in bank.problems()} == {(0, 2), (2, 0)}
    with pytest.warns(UserWarning, match="refilling 2 bad shard"):
        refilled = fill(tiny_dataset, tmp_path)
    assert folder_bytes(refilled.path) == original


def test_corrupt_manifest_is_refused_then_rebuilt(tiny_dataset, tmp_path):
    bank = fill(tiny_dataset, tmp_path)
    original = folder_bytes(bank.path)
    (bank.path / "manifest.json").write_text("{not json")
    with pytest.raises(BankError, match="corrupt"):
        SyntheticBank.open(bank.path)
    gen = FakeGenerator()
    with pytest.warns(UserWarning, match="discarding"):
        rebuilt = fill(tiny_dataset, tmp_path, gen)
    assert len(gen.calls) > 0 and folder_bytes(rebuilt.path) == original


def test_mismatched_manifest_key_is_refused(tiny_dataset, tmp_path):
    bank = fill(tiny_dataset, tmp_path)
    # a bank copied under another key's name
    copy = tmp_path / "0123456789abcdef"
    shutil.copytree(bank.path, copy)
    with pytest.raises(BankError, match="belongs to bank"):
        SyntheticBank.open(copy)
    # a manifest whose inputs were edited no longer hashes to its key
    manifest = json.loads((bank.path / "manifest.json").read_text())
    manifest["seed"] = 99
    (bank.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BankError, match="edited"):
        SyntheticBank.open(bank.path)
    with pytest.raises(BankError, match="no bank"):
        SyntheticBank.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BankError, match="manifest"):
        SyntheticBank.open(tmp_path / "empty")
    # a changed generator config gives another key, never the stale bank
    other = fill(tiny_dataset, tmp_path, FakeGenerator(offset=1))
    assert other.key != bank.key


# -- drawing ------------------------------------------------------------------------------------------
def test_draw_is_seeded_and_replaces_only_beyond_availability(tiny_dataset, tmp_path):
    bank = fill(tiny_dataset, tmp_path, per_class=[8, 5, 0])
    all0 = bank.images(0)
    rows = {r.tobytes(): i for i, r in enumerate(all0)}
    assert len(rows) == 8  # noise images are distinct
    a = bank.draw(0, 5, np.random.default_rng(3))
    b = bank.draw(0, 5, np.random.default_rng(3))
    c = bank.draw(0, 5, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (5, 8, 8, 1) and len({r.tobytes() for r in a}) == 5  # no repeats
    # the drawn rows are the ones the rng picks, across shard boundaries
    idx = np.random.default_rng(3).choice(8, 5, replace=False)
    np.testing.assert_array_equal(a, all0[idx])
    full = bank.draw(0, 8, np.random.default_rng(0))
    assert sorted(rows[r.tobytes()] for r in full) == list(range(8))
    beyond = bank.draw(0, 13, np.random.default_rng(0))
    ids = [rows[r.tobytes()] for r in beyond]
    assert len(beyond) == 13 and sorted(ids[:8]) == list(range(8)) and set(ids) <= set(range(8))
    with_repl = bank.draw(1, 5, np.random.default_rng(0), replace=True)
    assert len(with_repl) == 5
    with pytest.raises(ValueError, match="without replacement"):
        bank.draw(0, 9, np.random.default_rng(0), replace=False)
    with pytest.raises(ValueError, match="no images"):
        bank.draw(2, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="numpy Generator"):
        bank.draw(0, 1, 0)
    with pytest.raises(ValueError, match="class_id"):
        bank.draw(3, 1, np.random.default_rng(0))

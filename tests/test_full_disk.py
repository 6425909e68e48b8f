"""A full disk while saving a cache entry after long work (issue 26 item 8): one line naming the file, never
torch's ``RuntimeError: [enforce fail at inline_container.cc:672] unexpected pos`` or a safetensors error."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tests.test_train_agents import TINY_AUGMENT


def _disk_fills_after(monkeypatch, limit: int = 300) -> None:
    """Every atomic file write fails as a full disk does once ``limit`` bytes went through: the write raises ENOSPC
    (a serialiser streaming into the file sees that mid-way, as torch does on a real full disk)."""
    from tailmix.io import atomic

    def write(self, data) -> int:
        self.written = getattr(self, "written", 0) + len(data)
        if self.written > limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._fh.write(data)

    monkeypatch.setattr(atomic._HashingWriter, "write", write)


def test_encoder_save_on_a_full_disk_is_an_os_error_naming_the_file(tiny_dataset, tmp_path, monkeypatch):
    from tailmix.envs.features import EncoderConfig, fit_encoder
    from tailmix.train_agents import os_error_message

    _disk_fills_after(monkeypatch)
    with pytest.raises(OSError) as caught:
        fit_encoder(tiny_dataset, EncoderConfig(epochs=1, folds=2), cache_dir=tmp_path)
    assert caught.value.errno == errno.ENOSPC and "encoder-" in caught.value.filename
    line = os_error_message(caught.value)
    assert "disk is full" in line and str(tmp_path) in line
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".pt", ".tmp")]  # nothing half-written left


def test_full_disk_after_the_work_is_one_line_in_the_cli(tmp_path, monkeypatch, capsys):
    from tailmix.envs import features
    from tailmix.train_agents import main

    monkeypatch.setattr(features, "_MEMORY", {})  # an encoder fitted by an earlier test in this process: fit again
    _disk_fills_after(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--policy", "none", *TINY_AUGMENT, "--cache-dir", str(tmp_path / "cache"), "--run-dir",
              str(tmp_path / "run")])
    assert exc.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: No space left on device on "), lines
    assert "encoder-" in lines[0] and "disk is full" in lines[0]


def test_safetensors_error_of_a_full_disk_becomes_an_os_error(tmp_path):
    from tailmix.io.atomic import os_error_of, save_folder

    class SafetensorError(Exception):  # what safetensors (Rust) raises: no OSError, the errno only in its text
        pass

    def save(folder: Path) -> None:
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(OSError) as caught:
        save_folder(tmp_path / "gen", save)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "gen")
    assert not list(tmp_path.iterdir())  # the temporary folder is gone
    assert os_error_of(ValueError("unrelated"), tmp_path) is None

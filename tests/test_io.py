import numpy as np
import pytest

from helpers.io import atomic_dir, atomic_save_npz, atomic_write_text


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "good")
    with pytest.raises(RuntimeError):
        from helpers.io import atomic_path

        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_npz_round_trip(tmp_path):
    path = atomic_save_npz(tmp_path / "x.npz", a=np.arange(5))
    assert path.name == "x.npz"
    assert np.load(path)["a"].tolist() == [0, 1, 2, 3, 4]


def test_atomic_dir_swaps_only_when_complete(tmp_path):
    target = tmp_path / "saes"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("v1")
    assert (target / "f").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "f").write_text("half")
            raise RuntimeError("crash")
    assert (target / "f").read_text() == "v1"
    with atomic_dir(target) as tmp:
        (tmp / "g").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["g"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saes"]

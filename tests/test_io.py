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


def test_a_failed_transaction_puts_back_what_it_replaced(tmp_path):
    from helpers.io import keep, swap_in, temporary, transaction

    atomic_write_text(tmp_path / "a.txt", "old a")
    with atomic_dir(tmp_path / "codes") as tmp:
        (tmp / "c.bin").write_text("old codes")
    (tmp_path / "gone").mkdir()
    before = {p.name: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    seen = {}
    with pytest.raises(KeyboardInterrupt):
        with transaction():
            spool = temporary(tmp_path / ".pair_spool")
            spool.mkdir()
            kept = temporary(tmp_path / "kept")
            kept.mkdir()
            keep(kept)  # e.g. the spool a checkpoint refers to
            atomic_write_text(tmp_path / "a.txt", "new a")
            atomic_write_text(tmp_path / "a.txt", "newer a")
            atomic_save_npz(tmp_path / "b.npz", x=np.arange(3))
            with atomic_dir(tmp_path / "codes") as tmp:
                (tmp / "c.bin").write_text("new codes")
            swap_in(None, tmp_path / "gone")
            seen = {p.name: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
            raise KeyboardInterrupt
    # readers saw every new file whole, in place, during the transaction
    assert seen["a.txt"] == b"newer a" and seen["c.bin"] == b"new codes" and "gone" not in seen
    kept.rmdir()
    assert {p.name: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")} == before
    with transaction():
        atomic_write_text(tmp_path / "a.txt", "new a")
        swap_in(None, tmp_path / "gone")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "codes"]  # no kept copy left


def test_require_space_refuses_before_writing(tmp_path, monkeypatch):
    import shutil

    from helpers.errors import DiskError
    from helpers.io import require_space

    assert require_space(tmp_path / "new", 10, "the pass", "use --out") > 10
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=3 * 2**20))
    with pytest.raises(DiskError, match=r"^the pass needs about 1.2 GiB on the file system of .*/new, which has "
                                        r"3.0 MiB free: use --out$"):
        require_space(tmp_path / "new", 1_300_000_000, "the pass", "use --out")
    assert not (tmp_path / "new").exists() and not list(tmp_path.iterdir())  # the probe is gone

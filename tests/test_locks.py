"""The writer lock of a folder, the writing-step decorator and the interruption line."""

import errno
import os
import re
import signal
import subprocess
import sys

import pytest

from helpers.errors import BusyError, DiskError
from helpers.io import atomic_write_text
from helpers.locks import (Interrupted, catch_signals, interruption, lock_file, note_kept, set_waiting,
                           writer_lock, writes)


@pytest.fixture
def no_wait():
    set_waiting(False)
    yield
    set_waiting(True)


def _holder_elsewhere(folder):
    """A process that holds ``folder``'s lock until killed."""
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'{\"pid\": %d, \"step\": \"collect\", "
            "\"command\": \"python -m helpers collect\", \"started\": \"09:00\"}' % os.getpid()); "
            "print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock_file(folder))], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_lock_file_beside_the_folder_names_the_holder(tmp_path):
    folder = tmp_path / "exp"
    with writer_lock(folder, "partners"):
        text = lock_file(folder).read_text()
        assert lock_file(folder) == tmp_path / ".exp.lock"
        assert f'"pid": {os.getpid()}' in text and '"step": "partners"' in text
        with writer_lock(folder, "gates"):  # the same process again (prepare runs the steps): no wait
            pass
    assert lock_file(folder).read_text() == ""  # released: nobody named


def test_busy_folder_stops_at_once_then_a_dead_holder_is_taken_over(tmp_path, no_wait):
    folder = tmp_path / "exp"
    folder.mkdir()
    proc = _holder_elsewhere(folder)
    try:
        with pytest.raises(BusyError, match=rf"{re.escape(str(folder))} is being written by pid {proc.pid} "
                                            r"\(collect: `python -m helpers collect`, since 09:00\): wait until"):
            with writer_lock(folder, "collect"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # what the killed writer left half-written goes when its folder is taken over
    (folder / ".~metadata.json.x1.tmp").write_text("half")
    (tmp_path / ".~bak.exp").mkdir()
    (folder / "kept.npz").write_text("whole")
    with writer_lock(folder, "collect"):
        assert sorted(p.name for p in tmp_path.iterdir()) == [".exp.lock", "exp"]
        assert [p.name for p in folder.iterdir()] == ["kept.npz"]


def test_only_rank_zero_locks(tmp_path, monkeypatch, no_wait):
    folder = tmp_path / "exp"
    proc = _holder_elsewhere(folder)
    try:
        monkeypatch.setenv("RANK", "1")
        with writer_lock(folder):  # not the writer: no lock, no wait
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(BusyError):
            with writer_lock(folder):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_a_read_only_place_takes_no_lock(tmp_path):
    from .test_faults import read_only

    folder = tmp_path / "ro" / "exp"
    folder.mkdir(parents=True)
    with read_only(tmp_path / "ro"):
        with writer_lock(folder):  # no one can write there: nothing to wait for
            pass
    assert not lock_file(folder).exists()


def test_a_step_undoes_its_writes_and_says_the_disk_is_full(tmp_path):
    out = tmp_path / "exp"
    atomic_write_text(out / "a.json", "old a")

    @writes("partners", lambda a: a["out"])
    def step(out, fail_with):
        atomic_write_text(out / "a.json", "new a")
        atomic_write_text(out / "b.json", "new b")
        raise fail_with

    full = rf"^partners stopped: no space left on the device of {re.escape(str(out))}; its temporary files"
    with pytest.raises(DiskError, match=full + " were removed and the previous artefacts are unchanged"):
        step(out, OSError(errno.ENOSPC, "No space left on device"))
    assert [p.name for p in out.iterdir()] == ["a.json"] and (out / "a.json").read_text() == "old a"
    with pytest.raises(PermissionError):  # a file it could not read is not a read-only disk
        step(out, PermissionError(errno.EACCES, "Permission denied", "/etc/shadow"))
    with pytest.raises(DiskError, match=f"^partners cannot write into {re.escape(str(out / 'b.json'))}"):
        step(out, PermissionError(errno.EACCES, "Permission denied", str(out / "b.json")))
    assert (out / "a.json").read_text() == "old a"


def test_interruption_says_what_was_done_kept_and_how_to_resume(tmp_path):
    restore = catch_signals()
    try:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL

        @writes("partners", lambda a: tmp_path / "exp")
        def partners():
            pass

        @writes("collect", lambda a: tmp_path / "exp")
        def collect():
            note_kept(f"the checkpoint at 1,200 tokens ({tmp_path}/exp/checkpoint.pt)")
            raise Interrupted(signal.SIGTERM)

        @writes("prepare", lambda a: tmp_path / "exp")
        def prepare():
            partners()
            collect()

        with pytest.raises(Interrupted) as err:
            prepare()
        line = interruption(err.value, ["prepare", "-e", "smoke", "--quiet"], "prepare")
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert line.startswith("interrupted by SIGTERM after 0 s; done: partners; collect stopped: its temporary "
                           "files were removed and the previous artefacts are unchanged; kept: the checkpoint at "
                           "1,200 tokens (")
    assert line.endswith("; resume with `python -m helpers collect -e smoke --quiet --resume`, then "
                         "`python -m helpers prepare -e smoke --quiet`")
    catch_signals()()  # a new run: nothing done yet
    assert interruption(KeyboardInterrupt(), ["gates", "-e", "smoke"], "gates").endswith(
        "s; nothing was written; rerun `python -m helpers gates -e smoke`")

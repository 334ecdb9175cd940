"""The fault matrix: every writing step, under each fault, ends with one line and leaves the
previous artefacts as they were; a rerun (``--resume`` where a checkpoint was kept) then ends
equal to an uninterrupted run.

The steps run through the command line (in this process) on a tiny random Llama (2 sites,
32 features, 400 tokens); the faults:

- ``busy``: another process holds the folder's writer lock, the step runs with ``--no-wait``;
- ``read-only``: the step's target folder is read-only (``chmod``, or ``chattr +i`` as root;
  skipped where neither works);
- ``disk full``: ``ENOSPC`` at a random one of the step's writes (every ``np.save``/``np.savez``
  array, ``torch.save``, ``Path.write_text``, safetensors file and batch of recorded codes);
- ``interrupt``: SIGINT (SIGTERM for train-saes, browser and prepare) sent to the process at a
  random one of those writes;
- ``rerun``: the step again, while another writer holds the lock at first: it waits, saying
  who holds it, then runs; its arrays equal the uninterrupted run's.

Each fault asserts one line on stderr and a non-zero exit, no temporary file left, every file
that was there before byte-identical, and every artefact that was valid (checksums) still valid.
``FAULT_SEED`` (environment) picks other random writes.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import functools
import hashlib
import json
import logging
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.cli import main
from helpers.locks import lock_file

SEED = os.environ.get("FAULT_SEED", "0")
STEPS = ("collect", "partners", "gates", "matching", "neurons", "explorer", "browser", "prepare", "train-saes")
FAULTS = ("busy", "read-only", "disk full", "interrupt", "rerun")
TERM = ("train-saes", "browser", "prepare")  # interrupted by SIGTERM (the others by SIGINT)
NAME = "faults"
#: what a failed step may add or change: the checkpoint it keeps, the steps prepare finished, the SAEs
#: train-saes finished before it failed (resumed by a rerun)
MAY_CHANGE = {"collect": ("artefacts/faults/checkpoint*.pt",), "train-saes": ("artefacts/saes/faults.training*",),
              "prepare": ("artefacts/faults/partners.*", "artefacts/faults/gates.*", "artefacts/faults/matching.*",
                          "artefacts/faults/neurons.*")}
DERIVED = ("partners", "gates", "matching", "neurons")


class Writes:
    """Counts the write calls; ``arm(k, action)`` runs ``action`` at the k-th from now."""

    def __init__(self):
        self.count, self.at, self.action = 0, None, None

    def tick(self):
        self.count += 1
        if self.count == self.at:
            self.at = None
            self.action()

    def arm(self, k, action):
        self.count, self.at, self.action = 0, k, action


def _enospc():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class World:
    def __init__(self, root: Path, exp_file: Path, writes: Writes):
        from helpers.experiment import get_experiment

        self.root, self.exp_file, self.writes = root, exp_file, writes
        self.exp = get_experiment(str(exp_file))
        self.counts: dict[str, int] = {}
        self.baseline: dict[str, dict] = {}

    @property
    def stats(self) -> Path:
        return self.root / "artefacts" / NAME

    def argv(self, step, *extra):
        site = {"explorer": ["--force", "--out", str(self.root / "site" / "explorer")],
                "browser": ["--out", str(self.root / "site" / "browser")],
                "collect": ["--checkpoint-tokens", "128"], "train-saes": ["--force"]}.get(step, [])
        quiet = [] if step == "browser" else ["--quiet"]
        return [step, "--experiment", str(self.exp_file), *quiet, *site, *extra]

    def target(self, step) -> Path:
        """The folder the step writes into (and whose lock a busy test holds)."""
        return {"train-saes": self.root / "artefacts" / "saes" / NAME, "explorer": self.root / "site" / "explorer",
                "browser": self.root / "site" / "browser"}.get(step, self.stats)

    def outputs(self, step) -> dict[str, object]:
        """The contents of what ``step`` writes: npz arrays (but timings), other files' bytes."""
        if step == "train-saes":
            files = [p for p in self.target(step).rglob("*") if p.suffix == ".safetensors"]
        elif step == "collect":
            from helpers.stats import ARTEFACT_FILES

            files = [self.stats / f for f in ARTEFACT_FILES]
        elif step in DERIVED + ("prepare",):
            files = [self.stats / f"{s}.npz" for s in (DERIVED if step == "prepare" else (step,))]
        else:
            files = [p for p in self.target(step).rglob("*") if p.is_file() and p.name != "build.json"]
        out = {}
        for f in sorted(files):
            key = str(f.relative_to(self.root))
            if f.suffix == ".npz":
                with np.load(f) as data:
                    out.update({f"{key}:{k}": data[k] for k in data.files if k != "seconds"})
            else:
                out[key] = f.read_bytes()
        return out

    def snapshot(self) -> dict[str, str]:
        """Every entry under the artefacts and site folders (lock files aside): a file's SHA-256."""
        out = {}
        for base in (self.root / "artefacts", self.root / "site"):
            for p in base.rglob("*"):
                if not p.name.endswith(".lock"):
                    out[str(p.relative_to(self.root))] = (
                        hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder")
        return out

    def ready(self) -> dict[str, bool]:
        """Which artefacts are valid (checksums, experiment, made from the statistics on disk)."""
        from helpers.evolution.gate_artefact import gates_ready
        from helpers.evolution.matching_artefact import matching_ready
        from helpers.evolution.neuron_artefact import neurons_ready
        from helpers.evolution.partners import partners_ready
        from helpers.stats import statistics_ready
        from helpers.subject.saes import trained_saes_ready

        return {"saes": trained_saes_ready(self.exp), "statistics": statistics_ready(self.exp),
                "partners": partners_ready(self.exp), "gates": gates_ready(self.exp),
                "matching": matching_ready(self.exp), "neurons": neurons_ready(self.exp)}

    def drop_derived(self):
        for p in self.stats.iterdir():
            if p.name.split(".")[0] in DERIVED:
                p.unlink()

    @contextmanager
    def held(self, step, until_waiting: bool = False, then=None):
        """Hold the step's writer lock as another process would; ``until_waiting``: release it once
        the step says it waits (after calling ``then``). Yields the event set when it said so."""
        folder = self.target(step)
        fd = os.open(lock_file(folder), os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "step": "test", "command": "pytest",
                                  "started": "now"}).encode(), 0)
        said = threading.Event()

        class Said(logging.Handler):
            def emit(self, record):
                if "waits" in record.getMessage():
                    said.set()

        handler = Said()
        logging.getLogger("helpers.locks").addHandler(handler)

        def release():
            said.wait(1800)
            if then is not None:
                then()
            os.close(fd)

        thread = threading.Thread(target=release) if until_waiting else None
        if thread:
            thread.start()
        try:
            yield said
        finally:
            if thread:
                said.set()
                thread.join()
            else:
                os.close(fd)
            logging.getLogger("helpers.locks").removeHandler(handler)


@contextmanager
def read_only(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = lambda: folder.chmod(0o755)  # noqa: E731
    else:  # root writes through permissions: make the folder immutable instead
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                            capture_output=True).returncode:
            pytest.skip("cannot make a folder read-only here (root, no chattr +i)")
        undo = lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)  # noqa: E731
    try:
        try:
            (folder / "probe").touch()
        except OSError:
            pass
        else:
            (folder / "probe").unlink()
            pytest.skip("cannot make a folder read-only here")
        yield
    finally:
        undo()


@pytest.fixture(scope="module")
def world(tiny_llama_dir, tmp_path_factory):
    import sae_lens.saes.sae as sae_module
    import transformers

    import helpers.explore.site as site
    import helpers.subject.corpus as corpus
    from helpers.stats.codes import CodeWriter

    root = tmp_path_factory.mktemp("faults")
    exp_file = root / f"{NAME}.toml"
    exp_file.write_text(
        f'model = "{tiny_llama_dir}"\n'
        'sites = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]\n'
        'corpus = "wiki-summaries"\nmax_documents = 20\ntoken_budget = 400\ncontext_length = 32\n'
        'batch_size = 8\nsae_width = 32\nsae_k = 4\nsae_train_tokens = 600\nsae_heldout_tokens = 200\n'
        'sae_train_batch = 200\nsae_epochs = 1\nsae_lr = 0.003\nstep_tokens = 128\ntop_k_examples = 3\n'
        'device = "cpu"\n')
    writes = Writes()

    def counted(real):
        def write(*args, **kwargs):
            writes.tick()
            return real(*args, **kwargs)
        return write

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAE_EVOLUTION_ARTEFACTS", str(root / "artefacts"))
        for owner, name in ((np.lib.format, "write_array"), (torch, "save"), (pathlib.Path, "write_text"),
                            (CodeWriter, "add"), (sae_module, "save_file")):
            mp.setattr(owner, name, counted(getattr(owner, name)))
        mp.setattr(site, "_writers", lambda *a: 1)  # the site files in this process (its writes counted)
        # each step reads the corpus: parse its JSON once here (the same documents; 0.3 s a step)
        mp.setattr(corpus, "load_wiki_summaries", functools.lru_cache(corpus.load_wiki_summaries))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model: one thread is as fast, and lighter on a shared machine
        transformers.utils.logging.disable_progress_bar()
        w = World(root, exp_file, writes)
        # the uninterrupted run: each step's writes counted, its outputs kept
        for step in ("train-saes", "collect", "partners", "gates", "matching", "neurons", "explorer", "browser"):
            writes.count = 0
            assert main(w.argv(step)) == 0, step
            w.counts[step], w.baseline[step] = writes.count, w.outputs(step)
        w.counts["prepare"], w.baseline["prepare"] = sum(w.counts[s] for s in DERIVED), w.outputs("prepare")
        assert all(w.ready().values())
        yield w
        transformers.utils.logging.enable_progress_bar()
        torch.set_num_threads(threads)


def _one_line(capsys, starts: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(starts), err
    return err


@pytest.mark.parametrize("step,fault", [(s, f) for s in STEPS for f in FAULTS], ids=lambda v: v.replace(" ", "-"))
def test_fault(world, step, fault, capsys, caplog):
    w = world
    if step == "prepare":
        w.drop_derived()  # (so that prepare has something to write)
    rng = random.Random(f"{SEED}-{step}-{fault}")
    before, valid = w.snapshot(), w.ready()
    capsys.readouterr()
    if fault == "rerun":
        resume = ["--resume"] if step == "collect" and (w.stats / "checkpoint.pt").exists() else []
        with w.held(step, until_waiting=True) as said, caplog.at_level(logging.WARNING, "helpers.locks"):
            assert main(w.argv(step, *resume)) == 0
        assert said.is_set() and f"is being written by pid {os.getpid()} (test: `pytest`" in caplog.text
        got, want = w.outputs(step), w.baseline[step]
        assert got.keys() == want.keys()
        for key in want:
            if isinstance(want[key], bytes) or want[key].dtype.kind not in "fc":
                assert np.array_equal(got[key], want[key]) if not isinstance(want[key], bytes) else \
                    got[key] == want[key], key
            else:  # float sums of a resumed pass agree to rounding
                np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7, equal_nan=True, err_msg=key)
        assert not any(".~" in k for k in w.snapshot())
        return
    if fault == "busy":
        with w.held(step):
            rc = main(w.argv(step, "--no-wait"))
        assert rc == 2
        _one_line(capsys, f"error: {w.target(step)} is being written by pid {os.getpid()} (test: `pytest`")
    elif fault == "read-only":
        with read_only(w.target(step)):
            rc = main(w.argv(step))
        assert rc == 2
        assert "cannot write into " in _one_line(capsys, "error: ")
    elif fault == "disk full":
        k = rng.randint(1, w.counts[step])
        w.writes.arm(k, _enospc)
        rc = main(w.argv(step))
        assert w.writes.at is None, f"write {k} of {w.counts[step]} never came"
        assert rc == 2
        assert "stopped: no space left on the device" in _one_line(capsys, "error: "), k
    elif fault == "interrupt":
        sig = signal.SIGTERM if step in TERM else signal.SIGINT
        k = rng.randint(1, w.counts[step])
        w.writes.arm(k, lambda: os.kill(os.getpid(), sig))
        rc = main(w.argv(step))
        assert w.writes.at is None, f"write {k} of {w.counts[step]} never came"
        assert rc == 128 + sig
        line = _one_line(capsys, f"interrupted by {sig.name} after ")
        assert "rerun `python -m helpers" in line or "resume with `python -m helpers collect" in line, line
    after = w.snapshot()
    assert not [k for k in after if ".~" in k or ".pair_spool" in k], "temporary files left"
    may = MAY_CHANGE.get(step, ())
    changed = [k for k in set(before) | set(after) if before.get(k) != after.get(k)
               and not any(fnmatch.fnmatch(k, p) for p in may)]
    assert not changed, f"changed by a failed {step}: {changed}"
    now = w.ready()
    assert all(now[k] for k, ok in valid.items() if ok), (valid, now)


def test_prepare_waits_then_reuses_what_the_other_writer_made(world, tmp_path, capsys):
    """``prepare`` (what every notebook calls) while another process writes the experiment: it waits,
    then finds the partner tables, gate verification, matching results and neuron correlations the other
    one wrote."""
    keep = tmp_path / "made"
    keep.mkdir()
    for p in world.stats.iterdir():
        if p.name.split(".")[0] in DERIVED:
            shutil.copy2(p, keep / p.name)
    world.drop_derived()

    def the_other_writer_finishes():
        for p in keep.iterdir():
            shutil.copy2(p, world.stats / p.name)

    with world.held("prepare", until_waiting=True, then=the_other_writer_finishes) as said:
        assert main(world.argv("prepare")) == 0
    assert said.is_set()
    out = capsys.readouterr().out
    assert all(f"{what} for preset '{NAME}' reused" in out
               for what in ("partner tables", "gate verification", "matching methods", "features against neurons")), out


def _same_statistics(folder: Path, want: dict, prefix: str) -> None:
    from helpers.stats import ARTEFACT_FILES

    for name in ARTEFACT_FILES:
        with np.load(folder / name) as data:
            for key in data.files:
                np.testing.assert_array_equal(data[key], want[f"{prefix}/{name}:{key}"], err_msg=f"{name}:{key}")


def test_two_collects_started_together(world, tmp_path):
    """Two ``python -m helpers collect`` on one folder while a third process writes it: both wait,
    naming it; the first, interrupted while it waits (SIGINT), ends with one line and exit 130; the
    second runs once the folder is free and writes what one uninterrupted run writes."""
    import sys
    import time

    out = tmp_path / "stats"
    env = {**os.environ, "SAE_EVOLUTION_ARTEFACTS": str(world.root / "artefacts"), "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "helpers", "collect", "--experiment", str(world.exp_file), "--quiet",
           "--out", str(out)]
    logs = [tmp_path / "a.err", tmp_path / "b.err"]
    with open(logs[0], "w") as ea, open(logs[1], "w") as eb:
        fd = os.open(lock_file(out), os.O_RDWR | os.O_CREAT)  # another process writes --out
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "step": "test", "command": "pytest",
                                  "started": "now"}).encode(), 0)
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=e) for e in (ea, eb)]
        deadline = time.monotonic() + 1800  # (a generous bound: a shared machine can be very slow)
        while not all("waits" in p.read_text() for p in logs) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [p.read_text() for p in logs]
            time.sleep(0.05)
        procs[0].send_signal(signal.SIGINT)
        assert procs[0].wait(1800) == 130
        os.close(fd)  # the folder is free: the second goes on
        assert procs[1].wait(1800) == 0, logs[1].read_text()
    first, second = (p.read_text() for p in logs)
    assert f"collect waits: {out} is being written by pid {os.getpid()} (test: `pytest`, since now)" in first
    assert first.count("\n") == 2 and "Traceback" not in first  # the waiting line, then one line
    assert first.splitlines()[-1].startswith("interrupted by SIGINT after ")
    assert f"; collect stopped while it waited for {out}: nothing was written; rerun `python -m helpers collect " \
        f"--experiment {world.exp_file} --quiet --out {out}`" in first
    assert "collect waits:" in second and "collect goes on after waiting" in second and "Traceback" not in second
    _same_statistics(out, world.baseline["collect"], f"artefacts/{NAME}")
    assert not [p for p in tmp_path.rglob("*") if ".~" in p.name or p.name == ".pair_spool"]


def test_too_small_disk_stops_before_the_first_token(world, tmp_path, monkeypatch, capsys):
    """The pass's need (checkpoints, spool, artefacts) against the free space: one line, nothing
    counted, nothing written."""
    import shutil as sh

    import helpers.io as io
    import helpers.stats.collect as collect

    counted = []
    monkeypatch.setattr(collect, "encode_batch", lambda *a, **k: counted.append(1))
    usage = sh.disk_usage(tmp_path)
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: usage._replace(free=5000))
    out = tmp_path / "stats"
    assert main(["collect", "--experiment", str(world.exp_file), "--quiet", "--out", str(out)]) == 2
    line = _one_line(capsys, "error: the statistics pass needs about ")
    assert f"on the file system of {out}, which has 4.9 KiB free: free some space, or write elsewhere (--out" in line
    assert not counted and not out.exists()


def test_a_real_small_file_system_stops_before_the_first_token(world, tmp_path, capsys):
    """The same on a 1 MiB tmpfs (where this test may mount one)."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert main(["collect", "--experiment", str(world.exp_file), "--quiet", "--out", str(small / "s")]) == 2
        line = _one_line(capsys, "error: the statistics pass needs about ")
        assert re.search(rf"MiB on the file system of {re.escape(str(small / 's'))}, which has (1.0 MiB|10\d\d.\d "
                         r"KiB) free: free some space", line), line
        assert [p.name for p in small.iterdir()] == [".s.lock"]  # (the writer lock's file) nothing else
    finally:
        subprocess.run(["umount", str(small)], check=True)

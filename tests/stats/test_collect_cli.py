"""The `collect` command: kill -9 and --resume, torchrun with 2 processes, bad input.

These run the real MiniLM through the command line on a shrunken smoke preset
with tiny SAEs trained in a temporary artefacts folder.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.experiment import PRESETS
from helpers.stats import ARTEFACT_FILES, load_artefact

SETS = [
    "max_documents=40", "sae_width=48", "sae_k=6", "sae_train_tokens=1500", "sae_heldout_tokens=300",
    "sae_train_batch=300", "sae_epochs=2", "token_budget=2400", "step_tokens=256", "batch_size=2",
    "context_length=48", "top_k_examples=5",
]
EXP = PRESETS["smoke"].replace(**{k: int(v) for k, v in (s.split("=") for s in SETS)})


def cli(command, *args, env, **kw):
    """``python -m helpers COMMAND --experiment smoke --set ... ARGS`` (ARGS win over SETS)."""
    cmd = [sys.executable, "-m", "helpers", command, "--experiment", "smoke",
           *sum((["--set", s] for s in SETS), []), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("artefacts")
    env = {**os.environ, "SAE_EVOLUTION_ARTEFACTS": str(root), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = cli("train-saes", "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    return env


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    done = cli("collect", "--quiet", "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert "tokens/s" in done.stdout and "pair counts int32, sums of products float64" in done.stdout
    return out


def same_statistics(a: Path, b: Path, exact_floats: bool, atol: float = 1e-7) -> None:
    for name in ARTEFACT_FILES:
        x, y = load_artefact(EXP, name, a), load_artefact(EXP, name, b)
        assert x.keys() == y.keys()
        for key in x:
            if x[key].dtype.kind in "iubU" or key in ("max", "hi_values", "lo_values") or exact_floats:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name}:{key}")
            else:  # float sums agree to rounding
                np.testing.assert_allclose(x[key], y[key], rtol=1e-6, atol=atol, equal_nan=True,
                                           err_msg=f"{name}:{key}")


def test_collect_writes_every_artefact(reference):
    # (codes/: every token's SAE codes, recorded for the later steps on a CPU in one process)
    assert sorted(p.name for p in reference.iterdir()) == sorted([*ARTEFACT_FILES, "cfg.json", "metadata.json",
                                                                   "codes"])


def test_sigkill_then_resume_equals_uninterrupted(env, reference, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "helpers", "collect", "--experiment", "smoke", "--quiet", "--out", str(out),
           "--checkpoint-tokens", "300", *sum((["--set", s] for s in SETS), [])]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = out / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint appeared before the run ended"
    assert not (out / "metadata.json").exists(), "the run finished before it could be killed"
    # a checkpoint of another experiment is refused, and left as it was
    before = ckpt.read_bytes()
    done = cli("collect", "--quiet", "--out", str(out), "--resume", "--set", "step_tokens=128", env=env)
    assert done.returncode == 2 and "written for another experiment (step_tokens: 256" in done.stderr
    assert ckpt.read_bytes() == before
    done = cli("collect", "--quiet", "--out", str(out), "--resume", env=env)
    assert done.returncode == 0, done.stderr
    assert not ckpt.exists()
    # a resumed pass does not record codes, and removes what the killed run had begun
    assert sorted(p.name for p in out.iterdir()) == sorted([*ARTEFACT_FILES, "cfg.json", "metadata.json"])
    same_statistics(reference, out, exact_floats=False)


@pytest.mark.parametrize("sums", [[], ["--set", "sum_dtype=float32", "--set", "flush_tokens=100"]],
                         ids=["float64", "float32-flushed"])
def test_torchrun_two_processes_equal_one(env, reference, tmp_path, sums):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    out = tmp_path / "dist"
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "helpers", "collect", "--experiment",
           "smoke", "--quiet", "--out", str(out), *sum((["--set", s] for s in SETS), []), *sums]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    meta = json.loads((out / "metadata.json").read_text())
    assert meta["processes"] == 2
    assert meta["precision"]["pair_counts"] == "int32"  # 2,400 tokens: int32 counts are exact
    assert meta["precision"]["product_sums"].startswith("float32" if sums else "float64")
    # float32 partial sums of at most 100 tokens, merged in float64 across the ranks
    same_statistics(reference, out, exact_floats=False, atol=2e-6 if sums else 1e-7)


@pytest.mark.parametrize("procs", [2, 3])
def test_torchrun_pair_parallel_equals_one_process_exactly(env, reference, tmp_path, procs):
    """Each rank holds a run of consecutive pairs of the 6 (2 ranks: pairs 0-2 and 3-5; 3 ranks:
    0-1, 2-3, 4-5), encodes only their sites, holds the per-site statistics of the sites it owns
    (2 ranks: 0-3 and 4-6; 3 ranks: 0-2, 3-4, 5-6) and sees every token: every number, float
    sums included, equals the single process's (the same updates in the same order)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    out = tmp_path / "pairs"
    cmd = [torchrun, "--standalone", "--nproc-per-node", str(procs), "-m", "helpers", "collect", "--experiment",
           "smoke", "--quiet", "--plan", "pairs", "--out", str(out), *sum((["--set", s] for s in SETS), [])]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    meta = json.loads((out / "metadata.json").read_text())
    assert meta["processes"] == procs and meta["plan"] == "pairs-parallel"
    same_statistics(reference, out, exact_floats=True)
    if procs == 2:  # one process cannot hold pairs on other ranks: one line, no traceback
        done = cli("collect", "--quiet", "--plan", "pairs", "--out", str(tmp_path / "one"), env=env)
        assert done.returncode == 2 and done.stderr.startswith("error: the pair-parallel plan needs several processes")
        assert done.stderr.count("\n") == 1  # refused before the model loads


def test_bad_input_is_one_line(env, tmp_path):
    done = cli("collect", "--quiet", "--out", str(tmp_path), "--resume", env=env)
    assert done.returncode == 2 and "no checkpoint" in done.stderr
    done = cli("collect", "--quiet", "--set", "dead_thresholds=[5, 0]", env=env)
    assert done.returncode == 2 and "strictly increasing" in done.stderr
    done = cli("collect", "--quiet", "--set", "step_tokens=0", env=env)
    assert done.returncode == 2 and "step_tokens=0 must be > 0" in done.stderr
    assert done.stderr.count("\n") == 1

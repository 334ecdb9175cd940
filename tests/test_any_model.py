"""End to end on a model that is not MiniLM nor GPT-2: a tiny random Llama saved in a folder,
an experiment file naming it, SAEs the project trains on its residual stream, and the
statistics pass, checked against the brute force from dense activations."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import main
from helpers.experiment import Experiment, get_experiment
from helpers.stats import load_metadata, run_pass
from helpers.subject.models import load_subject
from helpers.subject.saes import load_saes
from helpers.subject.training import train_saes

from .stats.test_collect import brute_force_check, dense_stream


@pytest.fixture
def llama_experiment(tiny_llama_dir, tmp_path):
    path = tmp_path / "tiny-llama.toml"
    path.write_text(
        f'model = "{tiny_llama_dir}"\n'
        'sites = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]\n'
        'corpus = "wiki-summaries"\nmax_documents = 30\ntoken_budget = 400\ncontext_length = 32\n'
        'batch_size = 8\nsae_width = 64\nsae_k = 8\nsae_train_tokens = 1500\nsae_heldout_tokens = 300\n'
        'sae_train_batch = 256\nsae_epochs = 2\nsae_lr = 0.003\nstep_tokens = 128\ntop_k_examples = 4\n'
        'device = "cpu"\n'
    )
    return path


def test_tiny_llama_trained_saes_through_collect(llama_experiment, artefacts_tmp, tmp_path):
    exp = get_experiment(str(llama_experiment))
    assert exp.name == "tiny-llama" and exp.model_spec.family == "llama" and exp.model_spec.d_model == 32
    result = train_saes(exp, progress=False)
    assert set(result.report) == set(exp.sites)
    for site, q in result.report.items():
        assert q["fvu"] < 1.0 and abs(q["l0"] - exp.sae_k) < 1e-6  # TopK: exactly k per token
    subject = load_subject(exp)
    assert type(subject.hf_model).__name__ == "LlamaForCausalLM"
    assert subject.special_tokens.prefix == (subject.tokenizer.bos_token_id,)  # prepend_bos
    saes = load_saes(exp)
    out = tmp_path / "stats"
    res = run_pass(exp, out=out, progress=False, subject=subject, saes=saes)
    assert res.tokens == 400
    X, doc, pos = dense_stream(subject, saes, exp)
    brute_force_check(exp, out, X, doc, pos)
    # the experiment is saved beside the artefacts and loads back equal
    assert Experiment.from_dict(load_metadata(exp, out)["experiment"]) == exp


def test_cli_info_on_an_experiment_file(llama_experiment, capsys):
    assert main(["info", "--experiment", str(llama_experiment), "--no-count", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"]["family"] == "llama" and info["model"]["n_layers"] == 3


REPO = Path(__file__).resolve().parents[1]


def _notebooks() -> list[Path]:
    """The book's notebooks, in the order of ``book/_toc.yml``; every notebook of ``notebooks/`` is in it."""
    import yaml

    toc = yaml.safe_load((REPO / "book" / "_toc.yml").read_text())
    listed = [REPO / "book" / f"{c['file']}.md" for c in toc["chapters"]]
    assert sorted(p.name for p in listed) == sorted(p.name for p in (REPO / "notebooks").glob("*.md"))
    return [REPO / "notebooks" / p.name for p in listed]


def _outputs(nb) -> list[tuple[str, str]]:
    """``(kind, text)`` of every output of an executed notebook: stream name, or the mime type."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                out.append((o.name, o.text))
            elif o.output_type == "error":
                out.append(("error", f"{o.ename}: {o.evalue}"))
            else:
                out += [(mime, text) for mime, text in o.get("data", {}).items() if mime.startswith("text/")]
    return out


@pytest.mark.slow
def test_tiny_llama_through_prepare_explorer_browser_and_every_notebook(llama_experiment, artefacts_tmp, tmp_path,
                                                                        monkeypatch, capsys):
    """End to end on a causal LM with 3 sites: ``helpers prepare`` (SAE training, statistics,
    partner tables, gate verification, matching ablations), the explorer and the browser, then
    every notebook of the book executed as the book executes them (nbclient, kernel python3,
    ``EXPERIMENT`` naming the experiment file), each without an error or a stderr output (the
    book builds with warnings as errors), each showing the experiment's sites, none MiniLM's."""
    import jupytext
    import nbclient

    exp = get_experiment(str(llama_experiment))
    assert main(["prepare", "--experiment", str(llama_experiment), "--quiet"]) == 0
    done = capsys.readouterr().out
    for step in ("SAEs for preset 'tiny-llama' trained", "statistics: 400 tokens", "partner tables for preset",
                 "gate verification for preset", "matching methods for preset"):
        assert step in done, done
    assert main(["explorer", "--experiment", str(llama_experiment), "--quiet", "--out", str(tmp_path / "ex")]) == 0
    data = tmp_path / "ex" / "explorer" / "data"
    meta = (data / "meta.js").read_text()
    assert f'"sites":{json.dumps(list(exp.sites), separators=(",", ":"))}' in meta and '"causal":true' in meta
    assert sorted(p.name for p in data.glob("site-*.js")) == sorted(f"site-{s}.js" for s in exp.sites)
    assert main(["browser", "--experiment", str(llama_experiment), "--out", str(tmp_path / "br")]) == 0
    assert "cross-layer browser: 192 features" in capsys.readouterr().out  # 3 sites x 64 features

    monkeypatch.setenv("EXPERIMENT", str(llama_experiment))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))  # this checkout
    before = sorted(p.name for p in (REPO / "notebooks").iterdir())
    shown = {}
    for path in _notebooks():
        nb = jupytext.read(path)
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as err:
            pytest.fail(f"{path.name} failed on the tiny Llama: {str(err)[-2000:]}")
        outputs = _outputs(nb)
        stderr = [text for kind, text in outputs if kind in ("stderr", "error")]
        assert not stderr, f"{path.name} wrote to stderr: {stderr[0][:500]}"
        text = "\n".join(t for _, t in outputs)
        for wrong in ("hidden.", "MiniLM", "7 sites"):
            assert wrong not in text, f"{path.name} shows {wrong!r} on a Llama experiment"
        shown[path.stem] = text
        if path.stem == "00_setup":  # the SAE quality table: one row per site of the experiment
            table = next(t for kind, t in outputs if kind == "text/plain" and "fvu" in t)
            # (a wide table prints in two blocks of columns, each listing the sites)
            rows = sorted({line.split()[0] for line in table.splitlines() if line.startswith("blocks.")})
            assert rows == sorted(exp.sites), table
    assert sorted(p.name for p in (REPO / "notebooks").iterdir()) == before  # nothing written beside them
    # the tables and summaries adapt to the 3 sites and 2 adjacent pairs of this experiment
    assert all(s in shown["00_setup"] for s in exp.sites) and "3 SAEs of 64 features" in shown["00_setup"]
    assert "2 adjacent pairs of sites" in shown["03_pair_coactivation"]
    assert "3 sites, 64 features each" in shown["09_pass_through"]
    assert "3 sites x 64 features" in shown["12_browser_and_search"]
    # the causal-LM branch: steered texts beside the random control, and the strength sweep
    assert "random, same norm" in shown["07_steering"] and "log-prob gain" in shown["07_steering"]
    for stem, text in shown.items():
        if stem not in ("07_steering",):  # 07 names only the site it steers
            assert any(s in text for s in exp.sites), f"{stem} names none of the experiment's sites"

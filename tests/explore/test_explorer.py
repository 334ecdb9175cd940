"""The feature explorer's data equal a brute force from the model (smoke subject, random TopK SAEs)."""

import json
import shutil

import numpy as np
import pytest
import torch

from helpers.errors import ArtefactMismatchError, ConfigError, MissingArtefactError
from helpers.experiment import PRESETS
from helpers.explore import build_explorer, feature_anchor, feature_link
from helpers.explore.pages import decode_levels, levels, table_partners, top_rows
from helpers.explore.site import build_data, unpack_site, write_site
from helpers.stats import load_artefact, run_pass
from helpers.subject.capture import capture_residuals
from helpers.subject.corpus import iter_token_batches, load_corpus

from ..stats.test_collect import random_topk_saes

EXP = PRESETS["smoke"].replace(token_budget=900, step_tokens=300, batch_size=8, device="cpu")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from helpers.subject.models import load_subject

    tmp = tmp_path_factory.mktemp("explorer")
    subject = load_subject(EXP)
    saes = random_topk_saes(EXP.sites)
    run_pass(EXP, out=tmp / "stats", progress=False, subject=subject, saes=saes)
    data = build_data(EXP, subject, saes, tmp / "stats", heldout_every=3)
    write_site(EXP, data, tmp / "site")
    return {"tmp": tmp, "subject": subject, "saes": saes, "data": data, "dense": dense_by_batch(subject, saes)}


def dense_by_batch(subject, saes):
    """Dense SAE codes of every counted token, batched exactly as the pass, with provenance."""
    docs = load_corpus(EXP.corpus, EXP.max_documents)
    X, doc, pos, ids, batch = {s: [] for s in EXP.sites}, [], [], [], []
    for b, tb in enumerate(iter_token_batches(docs, subject.tokenizer, subject.special_tokens, EXP.context_length,
                                              EXP.batch_size, EXP.token_budget)):
        acts = capture_residuals(subject, tb.input_ids, tb.attention_mask, EXP.sites)
        with torch.no_grad():
            for s in EXP.sites:
                X[s].append(saes[s].encode(acts[s][tb.token_mask]).numpy())
        doc.append(tb.doc_ids[tb.token_mask].numpy())
        pos.append(tb.positions[tb.token_mask].numpy())
        ids.append(tb.input_ids[tb.token_mask].numpy())
        batch.append(np.full(int(tb.token_mask.sum()), b))
    return ({s: np.concatenate(v) for s, v in X.items()}, np.concatenate(doc), np.concatenate(pos),
            np.concatenate(ids), np.concatenate(batch))


def read_chunk(path):
    text = path.read_text()
    assert text.startswith("EXPLORER.register(") and text.endswith(");\n")
    body = text[len("EXPLORER.register("):-3]
    kind_end = body.index(",", body.index(",") + 1)
    return unpack_site(json.loads(body[kind_end + 1:]))  # the packed columns as the page unpacks them


def test_example_windows_and_colours_equal_the_model(built):
    X, doc, pos, ids, _ = built["dense"]
    ex = built["data"]["examples"]
    mx = load_artefact(EXP, "max_activations", built["tmp"] / "stats")["max"]
    where = {(int(d), int(p)): i for i, (d, p) in enumerate(zip(doc, pos))}
    rng = np.random.default_rng(0)
    checked = 0
    for s_i, site in enumerate(EXP.sites):
        payload = read_chunk(built["tmp"] / "site" / "explorer" / "data" / f"site-{site}.js")
        e = payload["examples"]
        all_levels = decode_levels(e["levels"])
        offsets = np.concatenate([[0], np.cumsum(e["length"])])
        for f in rng.choice(EXP.sae_width, 12, replace=False):
            rows = range(e["start"][f], e["start"][f + 1])
            top = load_artefact(EXP, "top_examples", built["tmp"] / "stats")
            assert len(rows) == (top["hi_doc"][s_i, f] >= 0).sum() + (top["lo_doc"][s_i, f] >= 0).sum()
            for j in rows:
                centre = where[(e["doc"][j], e["pos"][j])]
                lo = centre - e["left"][j]
                window = np.arange(lo, lo + e["length"][j])
                # the window is the example's row: consecutive positions of one document
                assert (doc[window] == e["doc"][j]).all()
                assert (pos[window] == e["pos"][j] - e["left"][j] + np.arange(e["length"][j])).all()
                assert e["left"][j] == min(12, e["pos"][j] - pos[lo]) or e["left"][j] == 12
                want = levels(X[site][window, f], np.float32(mx[s_i, f]))
                got = all_levels[offsets[j]:offsets[j + 1]]
                np.testing.assert_array_equal(got, want)
                assert X[site][centre, f] > 0
                np.testing.assert_allclose(e["value"][j], X[site][centre, f], rtol=1e-3)
                checked += 1
        # raw activations (before quantisation) equal the model's, exactly
        mine = np.flatnonzero(ex.site == s_i)[:200]
        for r in mine:
            centre = where[(int(ex.doc[r]), int(ex.pos[r]))]
            ok = ex.ok[r]
            idx = centre + np.arange(-12, 13)[ok]
            np.testing.assert_array_equal(ex.acts[r][ok], X[site][idx, ex.feature[r]])
            np.testing.assert_array_equal(ex.ids[r][ok], ids[idx])
            for slot, off in enumerate(ex.partner_offset):
                pf = ex.partner_feature[r, slot]
                if pf >= 0 and 0 <= s_i + off < len(EXP.sites):
                    np.testing.assert_array_equal(ex.partner_acts[r, slot][ok], X[EXP.sites[s_i + off]][idx, pf])
    assert checked > 100


def test_recolour_levels_are_the_partners_activations(built):
    X, doc, pos, _, _ = built["dense"]
    mx = load_artefact(EXP, "max_activations", built["tmp"] / "stats")["max"]
    where = {(int(d), int(p)): i for i, (d, p) in enumerate(zip(doc, pos))}
    s_i, site = 2, EXP.sites[2]
    payload = read_chunk(built["tmp"] / "site" / "explorer" / "data" / f"site-{site}.js")
    e, rc = payload["examples"], payload["recolour"]
    plev = decode_levels(rc["levels"])
    R = len(rc["offsets"])
    off = 0
    for f in range(EXP.sae_width):
        for j in range(e["start"][f], e["start"][f + 1]):
            if e["kind"][j] != 0 or j - e["start"][f] >= rc["examples"]:
                continue
            n = e["length"][j]
            lo = where[(e["doc"][j], e["pos"][j])] - e["left"][j]
            for slot in range(R):
                p = rc["partners"][f][slot]
                other = s_i + rc["offsets"][slot]
                if p >= 0:
                    want = levels(X[EXP.sites[other]][lo:lo + n, p], np.float32(mx[other, p]))
                    np.testing.assert_array_equal(plev[off + slot * n: off + (slot + 1) * n], want)
            off += R * n
    assert off == plev.size


def test_histograms_partners_and_neighbours(built):
    X = built["dense"][0]
    payload = read_chunk(built["tmp"] / "site" / "explorer" / "data" / "site-hidden.1.js")
    edges = np.asarray(load_artefact(EXP, "histograms", built["tmp"] / "stats")["edges"])
    x = X["hidden.1"]
    for f in range(0, EXP.sae_width, 17):
        v = x[:, f][x[:, f] > 0].astype(np.float32)
        want = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
        row = payload["hist"][f]
        got = np.zeros_like(want)
        if len(row) > 1:
            got[row[0]: row[0] + len(row) - 1] = row[1:]
        np.testing.assert_array_equal(got, want)
        assert payload["fired"][f] == v.size
    # partners straight from the pass's tables: top Pearson of row / column
    r = load_artefact(EXP, "correlation", built["tmp"] / "stats")["r_1"]
    tables = table_partners(EXP, 5, built["tmp"] / "stats")
    down = np.asarray(payload["down"]["index"])  # [F, M, k] for pair 1 -> 2
    up = np.asarray(payload["up"]["index"])  # pair 0 -> 1
    np.testing.assert_array_equal(down[:, 0], top_rows(r, 5))
    np.testing.assert_array_equal(up[:, 0], tables["up_index"][0, 0])
    f = int(np.nanargmax(np.nanmax(r, 1)))
    assert down[f, 0, 0] == int(np.nanargmax(r[f]))
    np.testing.assert_allclose(payload["down"]["values"][f][0][0][0], np.nanmax(r[f]), rtol=1e-2)  # 2 digits
    # decoder neighbours: never the feature itself, cosines descending
    dec = np.asarray(payload["decoder"]["index"])
    assert dec.shape == (EXP.sae_width, 10) and (dec != np.arange(EXP.sae_width)[:, None]).all()
    assert (np.diff(np.asarray(payload["decoder"]["cosine"]), axis=1) <= 1e-3).all()


def test_token_label_scores_on_held_out_batches(built):
    X, doc, pos, ids, batch = built["dense"]
    data = built["data"]
    held = batch % 3 == 2
    for s_i, site in enumerate(EXP.sites):
        lab = data["labels"][s_i]
        fires = X[site][held] > 0
        present = ids[held][:, None] == lab[None, :]
        tp = (fires & present).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.testing.assert_allclose(data["precision"][s_i], np.where(present.sum(0) > 0, tp / present.sum(0), np.nan),
                                       equal_nan=True)
            np.testing.assert_allclose(data["recall"][s_i], np.where(fires.sum(0) > 0, tp / fires.sum(0), np.nan),
                                       equal_nan=True)
    # the label is a token of the feature's highest examples outside the held-out batches
    ex = data["examples"]
    s_i, f = 0, int(np.flatnonzero(data["labels"][0] >= 0)[0])
    rows = (ex.site == s_i) & (ex.feature == f) & (ex.kind == 0) & (ex.batch % 3 != 2)
    centre = ex.ids[rows][:, 12]
    values, counts = np.unique(centre, return_counts=True)
    assert data["labels"][0, f] in values[counts == counts.max()]


def test_effect_is_nearest_input_embeddings(built):
    subject, saes = built["subject"], built["saes"]
    E = subject.hf_model.get_input_embeddings().weight.detach()
    d = saes["hidden.3"].W_dec.detach()[7]
    cos = torch.nn.functional.cosine_similarity(E, d.unsqueeze(0), dim=1)
    best = built["data"]["effect"]["boosted"][3, 7]
    value = built["data"]["effect"]["boosted_value"][3, 7]
    np.testing.assert_allclose(value, cos[best].numpy(), rtol=1e-4, atol=1e-5)
    # the nearest among the corpus's tokens ([unusedN] and special tokens left out): a brute force
    present = np.unique(np.concatenate(list(built["data"]["doc_tokens"].values())))
    toks = subject.tokenizer.convert_ids_to_tokens(present.tolist())
    allowed = [int(i) for i, t in zip(present, toks)
               if i not in subject.tokenizer.all_special_ids and not t.startswith("[unused")]
    assert set(best.tolist()) <= set(allowed)
    order = np.argsort(-cos[allowed].numpy(), kind="stable")[: len(best)]
    np.testing.assert_allclose(value, cos[allowed].numpy()[order], rtol=1e-5, atol=1e-6)
    assert len(allowed) < E.shape[0]  # the smoke corpus holds a fraction of the vocabulary


def test_links_and_bad_input(built):
    assert feature_link(EXP, "hidden.3", 117) == "../explorer.html#site=hidden.3&feature=117"
    assert 'href="../explorer.html#site=hidden.3&amp;feature=7"' in feature_anchor(EXP, "hidden.3", 7)
    with pytest.raises(ConfigError, match="no site 'hidden.9'.*choose among"):
        feature_link(EXP, "hidden.9", 1)
    with pytest.raises(ConfigError, match="no feature 256 at 'hidden.1': features are 0..255"):
        feature_link(EXP, "hidden.1", 256)
    stats = built["tmp"] / "stats"
    with pytest.raises(ArtefactMismatchError, match="step_tokens: 300 on disk, 100 asked for"):
        build_explorer(EXP.replace(step_tokens=100), out=built["tmp"] / "other", subject=built["subject"],
                       saes=built["saes"], out_stats=stats)
    old = built["tmp"] / "old"
    shutil.copytree(stats, old)
    (old / "histograms.npz").unlink()
    with pytest.raises(MissingArtefactError, match="histograms.npz is missing.*helpers collect --experiment smoke"):
        build_explorer(EXP, out=built["tmp"] / "other", subject=built["subject"], saes=built["saes"], out_stats=old)
    assert not (built["tmp"] / "other").exists()


def test_written_site_is_self_contained(built):
    site = built["tmp"] / "site"
    html = (site / "explorer.html").read_text()
    js = (site / "explorer" / "explorer.js").read_text()
    for text in (html, js, (site / "explorer" / "explorer.css").read_text()):
        assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
        assert "fetch(" not in text
    for site_name in EXP.sites:
        assert (site / "explorer" / "data" / f"site-{site_name}.js").is_file()
    meta = read_chunk(site / "explorer" / "data" / "meta.js")
    assert meta["sites"] == list(EXP.sites) and meta["neuronpedia"] is None and meta["causal"] is False


def test_cli_without_statistics_is_one_line(artefacts_tmp, capsys):
    from helpers.cli import main

    assert main(["explorer", "--experiment", "smoke", "--out", str(artefacts_tmp / "site"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "helpers collect --experiment smoke" in err
    assert not (artefacts_tmp / "site").exists()


def test_partners_npz_is_used_when_present(built):
    from helpers.evolution.partners import build_partners
    from helpers.explore.pages import partner_tables

    stats = built["tmp"] / "stats"
    assert [str(m) for m in partner_tables(EXP, 5, stats)["measures"]] == ["pearson", "jaccard"]
    copy = built["tmp"] / "with-partners"
    shutil.copytree(stats, copy)
    build_partners(EXP, out=copy, saes=built["saes"], progress=False)
    tables = partner_tables(EXP, 5, copy)
    assert len(tables["measures"]) == 6 and tables["down_index"].shape[-1] == 2


def test_contexts_from_the_recorded_codes_equal_a_model_rerun(built):
    """The explorer reads the pass's recorded codes (no model run); re-running the model gives the
    same contexts, colours, recolourings and held-out counts."""
    ex = built["data"]["examples"]
    assert ex.from_codes and ex.tokens_run > 0
    rerun = build_data(EXP, built["subject"], built["saes"], built["tmp"] / "stats", heldout_every=3,
                       use_codes=False)["examples"]
    assert not rerun.from_codes
    for name in ("ids", "ok", "acts", "partner_acts", "partner_feature", "batch"):
        np.testing.assert_array_equal(getattr(ex, name), getattr(rerun, name), err_msg=name)
    assert ex.batches_run == rerun.batches_run and ex.tokens_run == rerun.tokens_run
    for key in ("tp", "fires", "present", "tokens"):
        np.testing.assert_array_equal(ex.heldout[key], rerun.heldout[key], err_msg=key)


def _mutual_and_unlisted(down, up_next, F):
    """(a, b, b2): b is a listed downstream partner of a and a a listed upstream partner of b;
    b2 is neither (a's measured edge outside the tables)."""
    listed_down = [{g for row in down[f] for g in row if g >= 0} for f in range(F)]
    listed_up = [{g for row in up_next[f] for g in row if g >= 0} for f in range(F)]
    for a in range(F):
        for b in sorted(listed_down[a]):
            if a in listed_up[b]:
                b2 = next(g for g in range(F) if g not in listed_down[a] and a not in listed_up[g])
                return a, b, b2
    raise AssertionError("no mutual partners in the tables")


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver")
def test_partner_rows_show_the_measured_drop_both_ways(built, tmp_path):
    import sys
    from pathlib import Path

    from helpers.evolution.measured_edges import describe, measured_edges
    from helpers.explore.site import meta_payload, site_payload

    data = dict(built["data"])  # no matching results in the fixture's statistics: the pages say so
    meta = meta_payload(EXP, data)["ablation"]
    assert not meta["offered"] and "python -m helpers matching --experiment smoke" in meta["note"]
    assert "measured" not in site_payload(EXP, data, 1)
    F, P = EXP.sae_width, len(EXP.site_pairs)
    down1, up2 = site_payload(EXP, data, 1)["down"]["index"], site_payload(EXP, data, 2)["up"]["index"]
    a, b, b2 = _mutual_and_unlisted(down1, up2, F)
    partner = np.full((P, 3, 2), -1)
    partner[1] = [[a, a], [a, -1], [-1, -1]]
    drop = np.full((P, 3, 2), np.nan)
    drop[1] = [[0.42, -0.13], [0.42, np.nan], [np.nan, np.nan]]
    downstream = np.full((P, 2), -1)
    downstream[1] = [b, b2]
    edges = measured_edges({"methods": ["cosine", "pearson", "random"], "sites": list(EXP.sites),
                            "downstream": downstream, "partner": partner, "drop": drop})
    data.update(measured=edges, measured_note=describe(edges))
    write_site(EXP, data, tmp_path / "site")
    payload = read_chunk(tmp_path / "site" / "explorer" / "data" / "site-hidden.1.js")
    rows = sorted([(b, 0.42, 3), (b2, -0.13, 1)])  # by partner; cosine+pearson = 3, cosine = 1
    assert payload["measured"]["down"] == {"feature": [a, a], "partner": [r[0] for r in rows],
                                           "drop": [r[1] for r in rows], "chosen_by": [r[2] for r in rows],
                                           "silent": [0, 0]}
    assert payload["measured"]["up"]["feature"] == []  # nothing measured into hidden.1
    payload = read_chunk(tmp_path / "site" / "explorer" / "data" / "site-hidden.2.js")
    assert payload["measured"]["up"]["feature"] == sorted([b, b2])

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "book"))
    from check_pages import _wait_render, chrome, remote_requests

    js = """
      const line = document.getElementById('measured-line');
      const row = (dir, g) => document.querySelector('#partners-' + dir + ' tr.partner[data-feature="' + g + '"] td.drop');
      return {measured: line.dataset.measured, listed: line.dataset.listed, text: line.innerText,
              down: row('down', arguments[0]) ? row('down', arguments[0]).innerText : null,
              up: row('up', arguments[1]) ? row('up', arguments[1]).innerText : null,
              dashes: document.querySelectorAll('td.drop:not(.measured)').length};"""
    url = (tmp_path / "site" / "explorer.html").resolve().as_uri()
    drv = chrome()
    try:
        seen = {}
        for site, f in (("hidden.1", a), ("hidden.2", b), ("hidden.2", b2)):
            drv.get("about:blank")
            drv.get(f"{url}#site={site}&feature={f}")
            _wait_render(drv, 0)
            seen[(site, f)] = drv.execute_script(js, b, a)
        problems = remote_requests(drv)
    finally:
        drv.quit()
    on_a, on_b, on_b2 = seen[("hidden.1", a)], seen[("hidden.2", b)], seen[("hidden.2", b2)]
    # a's page: the downstream partner b shows its drop; b2 (not a listed partner) is named in the line
    assert on_a["down"] == "0.420" and (on_a["measured"], on_a["listed"]) == ("2", "1")
    assert f"hidden.2 #{b2} -0.130" in on_a["text"] and on_a["dashes"] > 0
    # b's page: the upstream partner a shows the same drop
    assert on_b["up"] == "0.420" and (on_b["measured"], on_b["listed"]) == ("1", "1")
    assert on_b2["up"] is None and (on_b2["measured"], on_b2["listed"]) == ("1", "0")
    assert f"hidden.1 #{a} -0.130" in on_b2["text"] and "cosine" in on_b2["text"]
    assert problems == []


def test_site_files_written_by_forked_writers_equal_one_writer(built, tmp_path):
    one = write_site(EXP, built["data"], tmp_path / "one", workers=1)
    two = write_site(EXP, built["data"], tmp_path / "two", workers=2)
    assert one == two and any(k.startswith("explorer/data/site-") for k in one)
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_pages_show_explanations_and_the_table_sorts_by_score(built, tmp_path):
    import sys
    from pathlib import Path

    from helpers.explain.artefact import build_explanations, load_explanations
    from helpers.explore.site import meta_payload

    data = dict(built["data"])  # the fixture's statistics have no explanations: the pages say so
    note = meta_payload(EXP, data)["explanations"]
    assert not note["offered"] and "python -m helpers explain --experiment smoke" in note["note"]
    stats = built["tmp"] / "stats"
    build_explanations(EXP, out=stats, progress=False)
    expl = load_explanations(EXP, stats)
    data["explanations"] = expl
    write_site(EXP, data, tmp_path / "site")
    payload = read_chunk(tmp_path / "site" / "explorer" / "data" / "site-hidden.1.js")["explanation"]
    assert payload["text"] == expl["text"][1].tolist() and payload["kind"] == expl["kind"][1].tolist()
    np.testing.assert_allclose(payload["detection"], expl["detection_auroc"][1], rtol=0, atol=6e-4, equal_nan=True)
    f = int(np.nanargmax(expl["detection_auroc"][1]))
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("the page itself needs Debian's chromium and chromium-driver (the data were checked)")

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "book"))
    from check_pages import _wait_render, chrome

    url = (tmp_path / "site" / "explorer.html").resolve().as_uri()
    drv = chrome()
    try:
        drv.get(f"{url}#site=hidden.1&feature={f}")
        _wait_render(drv, 0)
        shown = drv.execute_script("return document.getElementById('explanation').innerText")
        drv.get("about:blank")
        drv.get(f"{url}#site=hidden.1")
        _wait_render(drv, 0)
        drv.execute_script("document.querySelector('th[data-sort=detection]').click()")
        first = drv.execute_script("return document.querySelector('#features tbody tr td').innerText")
    finally:
        drv.quit()
    two = np.format_float_positional(payload["detection"][f], precision=2, unique=False, fractional=False, trim="k")
    assert expl["text"][1, f] in shown and two in shown  # as the page writes it (toPrecision(2))
    best = np.nanmax(expl["detection_auroc"][1])
    assert first.lstrip("#").isdigit() and expl["detection_auroc"][1, int(first.lstrip("#"))] == best


def test_a_narrower_width_sites_columns_are_cut_to_its_width():
    """A width sweep's per-site arrays are padded to the widest SAE; its pages list only its own features."""
    from helpers.explore.site import _cut_columns

    n, w = 8, 3
    payload = {"fired": list(range(n)), "hist": [[0]] * n, "examples": {"start": list(range(n + 1)), "kind": "x"},
               "down": {"index": [[1]] * n}, "measured": {"up": {"feature": list(range(n))}},
               "widths": {"children": {"child": list(range(n))}}, "site": "s@w3"}
    out = _cut_columns(payload, n, w)
    assert out["fired"] == [0, 1, 2] and len(out["hist"]) == w and len(out["down"]["index"]) == w
    assert out["examples"] == {"start": [0, 1, 2, 3], "kind": "x"}
    # edge lists and the width columns (already of this site's width) are left as they are
    assert out["measured"] == payload["measured"] and out["widths"] == payload["widths"] and out["site"] == "s@w3"

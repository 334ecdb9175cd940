"""Write the static cross-layer browser: ``browser.html`` and its data as script-tag chunks.

Layout of the output folder (``book/_browser/`` by default; the book copies it next to its
pages, beside ``explorer.html``, through Sphinx's ``html_extra_path``)::

    browser.html               the page (state in the hash: #view=community:0&measure=jaccard&threshold=0.2;
                               without a view it opens on the data's default view, the strongest lineages)
    browser/browser.js, .css   written by this project, no library, nothing from the network
    browser/data/graph.js      nodes, edges with every measure, communities
    browser/data/prompts.js    precomputed prompt graphs and searches

Each data file is a ``<script>`` that calls ``BROWSER.register(kind, payload)``, so the page
works from ``file://`` (no ``fetch``). A node's click opens ``explorer.html#site=...&feature=...``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..io import REPO_ROOT, atomic_dir, require_space, stats_dir
from ..locks import writes

log = logging.getLogger(__name__)

__all__ = ["BrowserResult", "DEFAULT_OUT", "build_browser", "precompute", "write_browser"]

ASSETS = Path(__file__).parent / "assets"
DEFAULT_OUT = REPO_ROOT / "book" / "_browser"


@dataclass
class BrowserResult:
    out: Path
    nodes: int
    edges: int
    communities: int
    prompts: int
    searches: int
    seconds: float
    bytes: dict[str, int] = field(default_factory=dict)
    measured: int = 0  # measured (causal) edges drawn
    causal_note: str = ""
    default_view: str = "all"  # the view the page opens on, and its features and lineages
    default_nodes: int = 0
    default_lineages: int = 0

    def describe(self) -> str:
        causal = (f"{self.measured:,} of them with a measured causal effect" if self.measured
                  else f"no causal measure ({self.causal_note})")
        opens = (f"opens on the {self.default_lineages} strongest lineages ({self.default_nodes} features)"
                 if self.default_view == "lineages" else "opens on every feature with an edge")
        return (f"cross-layer browser: {self.nodes:,} features, {self.edges:,} edges ({causal}), {self.communities} "
                f"communities, {self.prompts} prompt graphs, {self.searches} searches; {opens}; in "
                f"{self.out / 'browser.html'} ({sum(self.bytes.values()) / 1e6:.1f} MB, {self.seconds:.1f} s)")


def _js(kind: str, payload: Any) -> str:
    return f"BROWSER.register({json.dumps(kind)}, {json.dumps(payload, separators=(',', ':'))});\n"


def write_browser(out: str | Path, graph: dict, prompts: Sequence[dict] = (), searches: Sequence[dict] = ()) -> dict[str, int]:
    """Write the page, its assets and data into ``out`` (atomically, as a folder); file sizes."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        (tmp / "browser" / "data").mkdir(parents=True)
        shutil.copy(ASSETS / "browser.html", tmp / "browser.html")
        for name in ("browser.js", "browser.css"):
            shutil.copy(ASSETS / name, tmp / "browser" / name)
        (tmp / "browser" / "data" / "graph.js").write_text(_js("graph", graph))
        (tmp / "browser" / "data" / "prompts.js").write_text(
            _js("prompts", {"prompts": list(prompts), "searches": list(searches)}))
        sizes = {str(p.relative_to(tmp)): p.stat().st_size for p in tmp.rglob("*") if p.is_file()}
    return sizes


def precompute(exp, subject, saes, partners: dict, graph: dict, prompts=None, searches=None,
               measure: str = "pearson", threshold: float = 0.1):
    """The curated (or given) prompt graphs and searches, as the notebook shows them and as the
    page reads them: ``(prompt_graphs, searches, page_prompts, page_searches)``."""
    from .browser import browser_prompt, browser_search
    from .curated import CURATED_PROMPTS, CURATED_SEARCHES
    from .search import prompt_activations, prompt_graph, search_prompts

    prompts = CURATED_PROMPTS if prompts is None else prompts
    searches = CURATED_SEARCHES if searches is None else searches
    acts = prompt_activations(subject, saes, exp, [p for _, p in prompts]) if prompts else None
    graphs = [prompt_graph(acts, i, partners, measure, threshold) for i in range(len(prompts))]
    results = [search_prompts(subject, saes, exp, pos, neg, t) for _, pos, neg, t in searches]
    page_prompts = [browser_prompt(graph, g, name) for g, (name, _) in zip(graphs, prompts)]
    page_searches = [browser_search(graph, r, name) for r, (name, *_) in zip(results, searches)]
    return graphs, results, page_prompts, page_searches


@writes("browser", lambda a: a["out"] or DEFAULT_OUT, lambda a: stats_dir(a["exp"].stats_name))
def build_browser(exp, out: str | Path | None = None, subject=None, saes=None, k_edges: int | None = None,
                  community_measure: str = "pearson", community_threshold: float = 0.1) -> BrowserResult:
    """Build the browser of ``exp`` into ``out`` (default ``book/_browser``) from its partner
    tables and statistics, with the curated prompt graphs and searches, and the causal effects
    measured by the matching pass where its artefact exists (else the page says why not)."""
    from ..evolution.measured_edges import measured_edges_or_note
    from ..evolution.partners import load_partners
    from ..stats.artefacts import load_artefact
    from ..subject.models import load_subject
    from ..subject.saes import load_saes
    from ..subject.corpus import stream_documents
    from .browser import DEFAULT_K_EDGES, add_labels, browser_graph, feature_labels

    t0 = time.perf_counter()
    out = Path(out) if out is not None else DEFAULT_OUT
    require_space(out, len(exp.sites) * exp.sae_width * 2048, "browser",
                  "free some space, or write it elsewhere (--out)")
    partners = load_partners(exp)
    fired = load_artefact(exp, "dead_features", keys=("fired",))["fired"]
    measured, note = measured_edges_or_note(exp)
    if measured is None:
        log.warning("the browser offers no causal measure: %s", note)
    graph = browser_graph(partners, fired, k_edges or DEFAULT_K_EDGES, community_measure, community_threshold,
                          seed=exp.seed, preset=exp.name, measured=measured, measured_note=note)
    subject = subject if subject is not None else load_subject(exp)
    top = load_artefact(exp, "top_examples", keys=("hi_doc", "hi_pos"))
    add_labels(graph, feature_labels(top, stream_documents(exp), subject.tokenizer))
    saes = saes if saes is not None else load_saes(exp, device=subject.device)
    _, _, prompts, searches = precompute(exp, subject, saes, partners, graph)
    sizes = write_browser(out, graph, prompts, searches)
    res = BrowserResult(out, len(graph["nodes"]["layer"]), len(graph["edges"]["a"]), len(graph["communities"]),
                        len(prompts), len(searches), time.perf_counter() - t0, sizes,
                        graph["causal"]["drawn"], graph["causal"]["note"], graph["default_view"],
                        len(graph["lineages"]["nodes"]), len(graph["lineages"]["chains"]))
    log.info(res.describe())
    return res

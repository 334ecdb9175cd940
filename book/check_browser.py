"""Open the cross-layer browser in headless Chromium the way a reader would and check it:

- it opens (no hash) on its default view, the strongest lineages chosen when the data were built:
  at most ``DEFAULT_VIEW_NODES`` features, none missing, the view named on the page; one click on
  "show every feature" shows the full view (more features), and another click brings it back;
- the edge count changes with the threshold and with the measure (through the page's controls);
- the causal effect (``causal_drop``), where the matching pass measured it: picking it from the
  menu shows exactly the measured edges above the threshold (counted here from the page's data),
  a different count than Pearson's, and the side panel lists the drops and the methods that chose
  each edge; where it was not measured, the menu does not offer it and the page says why;
- a community and a prompt graph open from the page's menu, and a feature's k-hop neighbourhood
  from its inputs;
- clicking a node opens ``explorer.html#site=...&feature=...``;
- no request leaves ``file://`` (Chrome's performance log);
- it stays responsive: the milliseconds of a redraw (new threshold) and of a hover.

    python book/check_browser.py book/_build/html       # the built book (browser.html at its root)
    python book/check_browser.py book/_browser          # the browser folder alone
    python book/check_browser.py --synthetic 2000 20000 # a random graph of that size, timed

Needs Debian's ``chromium`` and ``chromium-driver`` (as ``book/check_pages.py``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import check_pages
from check_pages import chrome, remote_requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.explore.browser import DEFAULT_VIEW_NODES  # noqa: E402

CHROME_FLAGS = check_pages.CHROME_FLAGS + ("--window-size=1400,900",)
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome:", "devtools:")
#: a redraw of the whole view (filter, layout, draw) must take less than this, in ms
MAX_REDRAW_MS = 1000
CAUSAL = "causal_drop"


def driver():
    return chrome(CHROME_FLAGS)


def open_page(drv, page: Path, hash_: str = "") -> dict:
    drv.get("about:blank")  # a new hash on the same page would not reload it
    drv.get(page.resolve().as_uri() + hash_)
    for _ in range(100):
        info = drv.execute_script("return window.BROWSER && document.getElementById('edge-count') "
                                  "&& BROWSER.info ? (function(){try{return BROWSER.info()}catch(e){return null}})() : null")
        if info:
            return info
        time.sleep(0.1)
    raise RuntimeError(f"{page}: the browser did not start")


def _set_threshold(drv, value: float) -> None:
    drv.execute_script("var t=document.getElementById('threshold'); t.value=arguments[0];"
                       "t.dispatchEvent(new Event('input'));", str(value))


def _edge_count(drv) -> int:
    return int(drv.find_element("id", "edge-count").text)


def external_requests(drv) -> list[str]:
    """URLs requested (since the last call) that are not local."""
    return remote_requests(drv, LOCAL_SCHEMES)


def check_default_view(drv, page: Path) -> tuple[list[str], dict]:
    """The page opens on the default view (at most DEFAULT_VIEW_NODES features, the view named on
    the page); one click on the full-view button shows more features, another goes back."""
    graph = read_graph(page)
    want = graph.get("default_view", "all")
    lineage = graph.get("lineages", {}).get("nodes", [])
    info = open_page(drv, page)
    name = drv.find_element("id", "view-name").text
    problems = []
    if want != "lineages" or not lineage:
        problems.append(f"the data choose no default view of lineages (default_view={want!r}, "
                        f"{len(lineage)} features)")
    if info["view"] != want or info["default_view"] != want:
        problems.append(f"the page opened on view {info['view']!r}, not the default {want!r}")
    if not 0 < info["nodes"] <= DEFAULT_VIEW_NODES:
        problems.append(f"the default view shows {info['nodes']} features, not 1 to {DEFAULT_VIEW_NODES}")
    if info["nodes"] != len(lineage) or int(drv.find_element("id", "node-count").text) != info["nodes"]:
        problems.append(f"the default view shows {info['nodes']} features, its data list {len(lineage)}")
    if "lineages" not in name.lower():
        problems.append(f"the page does not name the default view (view name {name!r})")
    button = drv.find_element("id", "full-view")
    button.click()
    full = drv.execute_script("return BROWSER.info()")
    full_name = drv.find_element("id", "view-name").text
    if full["view"] != "all" or not full["nodes"] > info["nodes"]:
        problems.append(f"one click on {button.text!r} showed view {full['view']!r} with {full['nodes']} features "
                        f"(default view: {info['nodes']})")
    if "full view" not in full_name.lower():
        problems.append(f"the page does not name the full view (view name {full_name!r})")
    drv.find_element("id", "full-view").click()
    back = drv.execute_script("return BROWSER.info()")
    if back["view"] != want or back["nodes"] != info["nodes"]:
        problems.append(f"a second click went to view {back['view']!r} ({back['nodes']} features), "
                        f"not back to {want!r} ({info['nodes']})")
    return problems, {"view": info["view"], "name": name, "nodes": info["nodes"], "edges": info["edges"],
                      "full_nodes": full["nodes"], "full_edges": full["edges"], "max_nodes": DEFAULT_VIEW_NODES}


def check_controls(drv, page: Path) -> list[str]:
    """Threshold, measure and menu through the page's own controls; returns the problems."""
    from selenium.webdriver.support.ui import Select

    problems = []
    open_page(drv, page, "#view=all&measure=pearson&threshold=0.1")
    low = _edge_count(drv)
    _set_threshold(drv, 0.3)
    high = _edge_count(drv)
    if not low > high:
        problems.append(f"edge count did not fall when the threshold rose 0.1 -> 0.3 ({low} -> {high})")
    Select(drv.find_element("id", "measure")).select_by_value("jaccard")
    _set_threshold(drv, 0.1)
    jac = _edge_count(drv)
    if jac == low:
        problems.append(f"edge count did not change with the measure (pearson {low}, jaccard {jac} at 0.1)")
    if drv.execute_script("return BROWSER.info().measure") != "jaccard":
        problems.append("the measure menu did not switch the measure")
    view = Select(drv.find_element("id", "view"))
    values = [o.get_attribute("value") for o in view.options]
    for kind in ("community:", "prompt:"):
        choice = next((v for v in values if v.startswith(kind)), None)
        if choice is None:
            problems.append(f"the menu offers no {kind[:-1]}")
            continue
        view.select_by_value(choice)
        info = drv.execute_script("return BROWSER.info()")
        if info["view"] != choice or info["nodes"] == 0:
            problems.append(f"choosing {choice} from the menu showed {info['nodes']} features in view {info['view']}")
        if kind == "prompt:" and not drv.find_element("id", "token").is_displayed():
            problems.append("a prompt graph shows no token menu")
    # a feature's neighbourhood: pick a feature with an edge, type it in, press "show"
    open_page(drv, page, "#view=all&measure=pearson&threshold=0.1")
    seed = drv.execute_script("var n = BROWSER.visibleNodes()[0]; return n === undefined ? null : [BROWSER.site(n), BROWSER.feature(n), n]")
    if seed is None:
        return problems + ["no feature with an edge at pearson >= 0.1 to start a neighbourhood from"]
    Select(drv.find_element("id", "view")).select_by_value("hood")
    Select(drv.find_element("id", "hood-site")).select_by_value(seed[0])
    for name, value in (("hood-feature", seed[1]), ("hood-k", 1)):
        box = drv.find_element("id", name)
        box.clear()
        box.send_keys(str(value))
    drv.find_element("id", "hood-go").click()
    one = drv.execute_script("return [BROWSER.info(), BROWSER.visibleNodes()]")
    box = drv.find_element("id", "hood-k")
    box.clear()
    box.send_keys("3")
    drv.find_element("id", "hood-go").click()
    three = drv.execute_script("return BROWSER.info()")
    if one[0]["view"] != "hood" or seed[2] not in one[1] or one[0]["nodes"] < 2:
        problems.append(f"the 1-hop neighbourhood of {seed[0]} #{seed[1]} showed {one[0]['nodes']} feature(s)")
    if three["nodes"] < one[0]["nodes"]:
        problems.append(f"3 hops showed fewer features ({three['nodes']}) than 1 hop ({one[0]['nodes']})")
    return problems


def read_graph(page: Path) -> dict:
    """The graph data the page loads (``browser/data/graph.js``)."""
    text = (page.parent / "browser" / "data" / "graph.js").read_text()
    return json.loads(text[text.index(",") + 1:text.rindex(")")])


def expected_edges(graph: dict, measure: str, threshold: float) -> int:
    """Edges the page must show in view 'all' (the rule of helpers.explore.browser.filter_edges)."""
    bit = 1 << graph["measures"].index(measure)
    if measure == CAUSAL:  # stored for the measured edges only
        mask = graph["edges"]["mask"]
        return sum(1 for e, v in zip(graph["causal"]["edge"], graph["causal"]["drop"])
                   if mask[e] & bit and v is not None and v >= threshold)
    return sum(1 for m, v in zip(graph["edges"]["mask"], graph["edges"]["values"][measure])
               if m & bit and v is not None and v >= threshold)


def check_causal(drv, page: Path) -> tuple[list[str], dict]:
    """The causal measure through the menu: exactly the measured edges above the threshold, a
    count unlike Pearson's, drops and methods in the side panel; or, not measured, a note."""
    from selenium.webdriver.support.ui import Select

    graph = read_graph(page)
    problems: list[str] = []
    open_page(drv, page, "#view=all&measure=pearson&threshold=0.1")
    pearson = _edge_count(drv)
    menu = Select(drv.find_element("id", "measure"))
    offered = [o.get_attribute("value") for o in menu.options]
    if CAUSAL not in graph["measures"]:
        note = drv.find_element("id", "measure-note")
        if CAUSAL in offered:
            problems.append("the menu offers the causal effect, which the data do not hold")
        if "not measured" not in note.text or not note.get_attribute("title"):
            problems.append(f"no note says why the causal effect is not offered ({note.text!r})")
        return problems, {"offered": False, "note": graph.get("causal", {}).get("note", "")}
    if CAUSAL not in offered:
        return [f"the menu does not offer {CAUSAL} (offers {offered})"], {"offered": True}
    menu.select_by_value(CAUSAL)
    lo = graph["ranges"][CAUSAL][0]
    counts = {}
    for t in (lo, 0.0, 0.5, 0.9):
        _set_threshold(drv, t)
        info = drv.execute_script("return BROWSER.info()")
        got, want = _edge_count(drv), expected_edges(graph, CAUSAL, t)
        counts[t] = got
        if info["measure"] != CAUSAL:
            problems.append(f"choosing {CAUSAL} from the menu left the measure at {info['measure']}")
        if got != want or info["measured_shown"] != got:
            problems.append(f"{CAUSAL} >= {t}: the page shows {got} edges ({info['measured_shown']} measured), "
                            f"the data hold {want} measured edges at or above it")
    if counts[lo] == 0:
        problems.append(f"{CAUSAL}: no measured edge shown even at the lowest threshold {lo}")
    if counts[0.5] == pearson and counts[lo] == pearson:
        problems.append(f"the edge count did not change from pearson ({pearson}) to {CAUSAL}")
    if not counts[lo] >= counts[0.0] >= counts[0.5] >= counts[0.9]:
        problems.append(f"{CAUSAL}: the edge count did not fall as the threshold rose {counts}")
    # hover a feature with a measured edge: the panel shows its drops and who chose them
    _set_threshold(drv, lo)
    panel = drv.execute_script("""
        var c = document.getElementById('graph'), n = BROWSER.visibleNodes()[0], p = BROWSER.screenPosition(n);
        c.dispatchEvent(new MouseEvent('mousemove', {clientX: p[0], clientY: p[1], bubbles: true}));
        return document.getElementById('panel').innerText;""")
    if "chosen by" not in panel or "drop" not in panel:
        problems.append(f"hovering a feature with a measured edge shows no drop in the panel ({panel[:120]!r})")
    return problems, {"offered": True, "pearson_at_0.1": pearson, "causal_edges": counts}


def pick_isolated(nodes: list, pos: list, window: list, radius: float = 8.0, margin: float = 10.0):
    """The node closest to the middle of ``nodes`` whose screen position ``pos`` is inside the
    ``window`` (width, height) and has no other node within ``radius`` px; None if there is none."""
    import numpy as np

    xy = np.asarray(pos, dtype=np.float64).reshape(-1, 2)
    inside = ((xy[:, 0] > margin) & (xy[:, 0] < window[0] - margin)
              & (xy[:, 1] > margin) & (xy[:, 1] < window[1] - margin))
    alone = np.zeros(len(xy), dtype=bool)
    for lo in range(0, len(xy), 1024):  # nearest-other distance, in blocks of rows
        d2 = ((xy[lo:lo + 1024, None, :] - xy[None, :, :]) ** 2).sum(-1)
        d2[np.arange(d2.shape[0]), np.arange(lo, lo + d2.shape[0])] = np.inf
        alone[lo:lo + 1024] = d2.min(1) > radius**2
    ok = np.flatnonzero(inside & alone)
    if ok.size == 0:
        return None
    return nodes[int(ok[np.argmin(np.abs(ok - len(nodes) // 2))])]


def check_click(drv, page: Path) -> list[str]:
    """Hovering a node fills the panel; clicking it opens its explorer page."""
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(drv, page, "#view=all&measure=pearson&threshold=0.1")
    nodes = drv.execute_script("return BROWSER.visibleNodes()")
    if not nodes:
        return ["no node to click at pearson >= 0.1"]
    # a node with no other within 8 px, inside the window (on a dense full view, dots overlap and the
    # pointer rightly picks the nearest of several), the one closest to the middle of the list
    pos = drv.execute_script("return arguments[0].map(function (n) { return BROWSER.screenPosition(n); })", nodes)
    n = pick_isolated(nodes, pos, drv.execute_script("return [window.innerWidth, window.innerHeight]"))
    if n is None:
        return ["every visible node has another within 8 px: nothing can be hovered unambiguously"]
    site, feature = drv.execute_script("return [BROWSER.site(arguments[0]), BROWSER.feature(arguments[0])]", n)
    x, y = drv.execute_script("return BROWSER.screenPosition(arguments[0])", n)
    body = drv.find_element("tag name", "body")
    # move from the body's top-left corner to the node's centre (viewport coordinates)
    rect = drv.execute_script("var r=document.body.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]")
    ActionChains(drv).move_to_element_with_offset(body, int(x - rect[0] - rect[2] / 2), int(y - rect[1] - rect[3] / 2)).perform()
    problems = []
    panel = drv.find_element("id", "panel").text
    if f"{site} #{feature}" not in panel:
        problems.append(f"hovering {site} #{feature} did not show it in the panel ({panel[:80]!r})")
    ActionChains(drv).click().perform()
    time.sleep(0.5)
    url = drv.current_url
    want = f"explorer.html#site={site}&feature={feature}"
    if not url.endswith(want):
        problems.append(f"clicking {site} #{feature} opened {url}, not ...{want}")
    return problems


def timings(drv, page: Path, thresholds=(-1.0, 0.0, 0.1, 0.2, 0.3)) -> dict:
    """Milliseconds of a full redraw per threshold (view 'all'), and of hover redraws."""
    info = open_page(drv, page, "#view=all&measure=pearson&threshold=-1")  # -1: every pearson edge
    redraw = {}
    for t in thresholds:
        ms = drv.execute_script("return BROWSER.set({threshold: arguments[0]})", t)
        redraw[t] = {"ms": round(ms, 1), **{k: v for k, v in drv.execute_script("return BROWSER.info()").items()
                                            if k in ("nodes", "edges")}}
    drv.execute_script("BROWSER.set({threshold: -1})")
    hover = drv.execute_script("""
        var c = document.getElementById('graph'), nodes = BROWSER.visibleNodes(), t0 = performance.now(), k = 0;
        for (var i = 0; i < nodes.length && k < 20; i += Math.max(1, Math.floor(nodes.length / 20)), k++) {
          var p = BROWSER.screenPosition(nodes[i]);
          c.dispatchEvent(new MouseEvent('mousemove', {clientX: p[0], clientY: p[1], bubbles: true}));
        }
        return (performance.now() - t0) / Math.max(k, 1);""")
    return {"total_nodes": info["total_nodes"], "total_edges": info["total_edges"], "redraw": redraw,
            "hover_ms": round(hover, 1)}


def check(page: Path, click: bool = True) -> tuple[list[str], dict]:
    """Every check on ``page`` (``browser.html``); ``(problems, timings)``."""
    drv = driver()
    drv.set_script_timeout(60)
    try:
        problems, default = check_default_view(drv, page)
        problems += check_controls(drv, page)
        found, causal = check_causal(drv, page)
        problems += found
        times = timings(drv, page)
        times["causal"] = causal
        times["default_view"] = default
        slow = [t for t, r in times["redraw"].items() if r["ms"] > MAX_REDRAW_MS]
        if slow:
            problems.append(f"redraw slower than {MAX_REDRAW_MS} ms at thresholds {slow}: {times['redraw']}")
        if click:
            problems += check_click(drv, page)
        # the click navigated to the explorer: its requests are in the log too
        problems += [f"request left file://: {u}" for u in external_requests(drv)]
    finally:
        drv.quit()
    return problems, times


def synthetic_page(folder: Path, n_nodes: int, n_edges: int) -> Path:
    """A browser page over a random graph of the given size, with one fake prompt graph."""
    from helpers.explore.browser import synthetic_graph
    from helpers.explore.browser_site import write_browser

    graph = synthetic_graph(n_nodes, n_edges)
    prompt = {"name": "synthetic", "prompt": "a b c", "tokens": ["a", "b", "c"], "missing": 0,
              "nodes": list(range(0, n_nodes, 7)), "acts": [[1.0, 0.0, 0.5]] * len(range(0, n_nodes, 7))}
    write_browser(folder, graph, [prompt], [])
    return folder / "browser.html"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--synthetic"]:
        n_nodes, n_edges = (int(a) for a in argv[1:3]) if len(argv) >= 3 else (2000, 20000)
        with tempfile.TemporaryDirectory() as tmp:
            problems, times = check(synthetic_page(Path(tmp) / "b", n_nodes, n_edges))
    else:
        root = Path(argv[0] if argv else "book/_build/html")
        page = root / "browser.html"
        if not page.is_file():
            print(f"no browser.html in {root}: build it with `python -m helpers browser` (make book)")
            return 1
        problems, times = check(page)
    print(json.dumps(times, indent=1))
    for p in problems:
        print("FAIL", p)
    print("browser: ok" if not problems else f"browser: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

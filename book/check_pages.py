"""Open the built book in headless Chromium the way a reader would, and fail on
a broken image, an empty figure or an error output.

    python book/check_pages.py book/_build/html

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them).
"""

from __future__ import annotations

import sys
from pathlib import Path

CHROME_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
)
# images are lazy-loaded: load them all, wait for each to load or fail, then list the failures
JS_BROKEN = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach(i => { i.loading = 'eager'; });
Promise.all(imgs.map(i => i.decode().catch(() => null)))
  .then(() => done(imgs.filter(i => i.naturalWidth === 0).map(i => i.src)));
"""
JS_ALL_IMAGES = "return Array.from(document.images).map(i => i.src);"
JS_FIGURES = ("return Array.from(document.querySelectorAll('.cell_output img, .output img'))"
              ".map(i => i.src);")
JS_ERRORS = ("return Array.from(document.querySelectorAll('.output.traceback, .output.error, .output.stderr'))"
             ".map(e => e.innerText.slice(0, 300));")


def blank(png: Path) -> bool:
    """True when an image has (almost) no variation: an empty figure."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    return pixels.std() < 2.0


def check(html_root: Path) -> list[str]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_script_timeout(60)
    problems: list[str] = []
    pages = sorted((html_root / "notebooks").glob("*.html"))
    if not pages:
        return [f"no notebook pages under {html_root / 'notebooks'}"]
    try:
        for page in [html_root / "index.html", *pages]:
            driver.get(page.resolve().as_uri())
            name = page.relative_to(html_root)
            broken = set(driver.execute_async_script(JS_BROKEN))
            broken |= {src for src in driver.execute_script(JS_ALL_IMAGES)
                       if src.startswith("file://") and not Path(src[len("file://"):]).is_file()}
            for src in sorted(broken):
                problems.append(f"{name}: broken image {src}")
            for err in driver.execute_script(JS_ERRORS):
                problems.append(f"{name}: error output: {err}")
            figures = driver.execute_script(JS_FIGURES)
            if page != html_root / "index.html" and not figures:
                problems.append(f"{name}: no figure")
            for src in figures:
                path = Path(src[len("file://"):]) if src.startswith("file://") else None
                if path is not None and path.is_file() and blank(path):
                    problems.append(f"{name}: empty figure {src}")
            print(f"{name}: {len(figures)} figure(s) checked")
    finally:
        driver.quit()
    return problems


# ----------------------------------------------------------------------------- the feature explorer
JS_EXPLORER_PAGE = """
const ex = document.querySelectorAll('#examples-hi .tok');
return {
  renders: Number(document.body.getAttribute('data-renders') || 0),
  ms: Number(document.body.getAttribute('data-render-ms') || -1),
  sinceNav: Number(document.body.getAttribute('data-since-navigation-ms') || -1),
  examples: document.querySelectorAll('#examples-hi .ex').length,
  coloured: Array.from(ex).filter(t => Number(t.dataset.level) > 0).length,
  bars: document.querySelectorAll('#histogram rect').length,
  down: Array.from(document.querySelectorAll('#partners-down tr.partner a')).map(a => a.getAttribute('href')),
  up: document.querySelectorAll('#partners-up tr.partner').length,
  title: (document.querySelector('h1') || {}).innerText || '',
  missing: (document.querySelector('.missing') || {}).innerText || '',
};
"""


def _explorer_driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def _wait_render(driver, before: int, timeout: float = 10.0) -> dict:
    import time

    end = time.time() + timeout
    while True:
        state = driver.execute_script(JS_EXPLORER_PAGE)
        if state["renders"] > before or time.time() > end:
            return state
        time.sleep(0.05)


def _network_requests(driver) -> list[str]:
    """Every URL the page asked for (Chrome's performance log)."""
    import json as _json

    urls = []
    for entry in driver.get_log("performance"):
        msg = _json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def check_explorer(html_root: Path, site: str | None = None, feature: int | None = None) -> list[str]:
    """Open ``explorer.html#site=..&feature=..`` from ``file://``: coloured examples, a histogram,
    partners; clicking a downstream partner opens its page; a page renders in under 1 s; a missing
    feature says so; no request leaves ``file://``."""
    import json as _json

    page = html_root / "explorer.html"
    if not page.is_file():
        return [f"no {page}"]
    meta_js = (html_root / "explorer" / "data" / "meta.js").read_text()
    meta = _json.loads(meta_js[meta_js.index("{"):meta_js.rindex("}") + 1])
    sites = meta["sites"]
    problems: list[str] = []
    driver = _explorer_driver()
    try:
        if site is None:  # the first feature of the second site with a downstream partner and examples
            site = sites[1] if len(sites) > 2 else sites[0]
        url = page.resolve().as_uri()
        driver.get(f"{url}#site={site}")
        _wait_render(driver, 0)
        if feature is None:
            feature = driver.execute_script(
                "const d = EXPLORER.data.site[arguments[0]];"
                "for (let f = 0; f < d.n_features; f++) if (d.fired[f] > 20 && d.down && d.down.index[f][0][0] >= 0) return f;"
                "return 0;", site)
        before = driver.execute_script("return EXPLORER.renders")
        driver.get(f"{url}#site={site}&feature={feature}")
        driver.refresh()
        state = _wait_render(driver, 0)
        name = f"explorer.html#site={site}&feature={feature}"
        print(f"{name}: rendered in {state['ms']:.0f} ms ({state['sinceNav']:.0f} ms after the page was opened, "
              f"data parsed included); {state['examples']} highest examples, "
              f"{state['coloured']} coloured tokens, {state['bars']} histogram bars, "
              f"{len(state['down'])} downstream / {state['up']} upstream partners")
        if state["examples"] == 0 or state["coloured"] == 0:
            problems.append(f"{name}: no examples with coloured tokens")
        if state["bars"] == 0:
            problems.append(f"{name}: no histogram")
        if not state["down"]:
            problems.append(f"{name}: no downstream partners")
        if not 0 <= state["sinceNav"] < 1000:
            problems.append(f"{name}: rendered {state['sinceNav']:.0f} ms after opening (budget 1000 ms)")
        if state["down"]:
            target = state["down"][0]
            before = state["renders"]
            driver.find_element("css selector", "#partners-down tr.partner a").click()
            after = _wait_render(driver, before)
            want = target.split("#", 1)[1]
            got = driver.execute_script("return location.hash.slice(1)")
            wanted_title = want.replace("site=", "").replace("&feature=", " feature ")
            if got != want or not after["title"].startswith(wanted_title):
                problems.append(f"{name}: clicking partner {want} opened {got!r} ({after['title']!r})")
            else:
                print(f"clicked downstream partner: {after['title']!r} rendered in {after['ms']:.0f} ms")
        # a feature and a site that do not exist
        for bad, words in ((f"site={site}&feature=999999", "There is no feature"), ("site=nowhere", "There is no site")):
            before = driver.execute_script("return EXPLORER.renders")
            driver.get(f"{url}#{bad}")
            state = _wait_render(driver, before)
            if words not in state["missing"] or "table" not in state["missing"] and "Sites" not in state["missing"]:
                problems.append(f"explorer.html#{bad}: no clear message ({state['missing']!r})")
        outside = [u for u in _network_requests(driver) if not u.startswith(("file://", "data:", "about:"))]
        problems += [f"explorer.html: request outside file:// {u}" for u in outside]
    finally:
        driver.quit()
    return problems


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "book/_build/html")
    if len(sys.argv) > 2 and sys.argv[2] == "--explorer-only":
        found = check_explorer(root)
        for line in found:
            print("PROBLEM", line)
        sys.exit(1 if found else 0)
    found = check(root) + check_explorer(root)
    for line in found:
        print("PROBLEM", line)
    sys.exit(1 if found else 0)

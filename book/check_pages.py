"""Open the built book in headless Chromium the way a reader would, and fail on
a broken image, an empty figure, an error output, a request that leaves the
disk (any URL outside ``file://``, from Chrome's network log), or a slider that
does not change its figure when moved (with no kernel).

    python book/check_pages.py book/_build/html

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them).
"""

from __future__ import annotations

import base64
import io
import json
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


# URL schemes that never leave the machine: inline data, blobs, blank frames
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
BOOK_DIR = Path(__file__).resolve().parent
# the sliders on a page (helpers.notebook.widgets.StaticSlider): the option shown and its image
JS_SLIDERS = """
return Array.from(document.querySelectorAll('.sae-slider')).map(s => {
  const shown = Array.from(s.querySelectorAll('img.sae-slider-frame')).filter(i => i.style.display !== 'none');
  const r = s.querySelector('input[type=range]');
  return {id: s.id, value: r.value, max: r.max, label: s.querySelector('output').textContent,
          shown: shown.map(i => i.src)};
});
"""


def blank(png) -> bool:
    """True when an image (a path, or PNG bytes) has (almost) no variation: an empty figure."""
    import numpy as np
    from PIL import Image

    source = io.BytesIO(png) if isinstance(png, bytes) else png
    pixels = np.asarray(Image.open(source).convert("L"), dtype=float)
    return pixels.std() < 2.0


def image_bytes(src: str):
    """The bytes of an image shown from disk or inline (None for anything else)."""
    if src.startswith("file://"):
        path = Path(src[len("file://"):])
        return path.read_bytes() if path.is_file() else None
    if src.startswith("data:image/png;base64,"):
        return base64.b64decode(src.split(",", 1)[1])
    return None


def remote_requests(driver, local: tuple[str, ...] = LOCAL_SCHEMES) -> list[str]:
    """URLs the page asked for since the last call that are not on the disk (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(local):
                urls.append(url)
    return sorted(set(urls))


def chrome(flags: tuple[str, ...] = CHROME_FLAGS):
    """Headless Debian chromium through selenium, logging every request (for remote_requests)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in flags:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def page_has_slider(page: Path) -> bool:
    """True when the notebook behind a page calls ``slider(``: its page must show a working one."""
    source = BOOK_DIR / "notebooks" / (page.stem + ".md")
    return source.is_file() and "slider(" in source.read_text()


def check_sliders(driver, name, expect: bool) -> tuple[list[str], int]:
    """Move every slider of the open page one step with the keyboard, as a reader would, and check
    that the figure shown and the value label change (no kernel, no network). Returns problems, count."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    problems = []
    before = driver.execute_script(JS_SLIDERS)
    if expect and not before:
        problems.append(f"{name}: its notebook has a slider but the page shows none")
    for s in before:
        if len(s["shown"]) != 1:
            problems.append(f"{name}: slider {s['id']} shows {len(s['shown'])} figures, not 1")
            continue
        if int(s["max"]) < 1:
            continue  # a single option: nothing to move
        key = Keys.ARROW_LEFT if s["value"] == s["max"] else Keys.ARROW_RIGHT
        control = driver.find_element(By.CSS_SELECTOR, f"#{s['id']} input[type=range]")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", control)
        control.send_keys(key)
        after = next(a for a in driver.execute_script(JS_SLIDERS) if a["id"] == s["id"])
        if after["value"] == s["value"]:
            problems.append(f"{name}: slider {s['id']} did not move")
        elif len(after["shown"]) != 1 or after["shown"] == s["shown"]:
            problems.append(f"{name}: moving slider {s['id']} did not change its figure")
        elif after["label"] == s["label"]:
            problems.append(f"{name}: moving slider {s['id']} did not change its value label")
        else:
            png = image_bytes(after["shown"][0])
            if png is not None and blank(png):
                problems.append(f"{name}: slider {s['id']} shows an empty figure at {after['label']}")
    return problems, len(before)


def check(html_root: Path) -> list[str]:
    driver = chrome()
    driver.set_script_timeout(60)
    problems: list[str] = []
    sliders = 0
    name = "(start)"
    pages = sorted((html_root / "notebooks").glob("*.html"))
    if not pages:
        return [f"no notebook pages under {html_root / 'notebooks'}"]
    try:
        for page in [html_root / "index.html", *pages]:
            # anything logged since the previous page's check was still that page's doing
            problems += [f"{name}: request outside file:// {url}" for url in remote_requests(driver)]
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
                png = image_bytes(src)
                if png is not None and blank(png):
                    problems.append(f"{name}: empty figure {src[:80]}")
            found, n_sliders = check_sliders(driver, name, page_has_slider(page))
            problems += found
            sliders += n_sliders
            remote = remote_requests(driver)
            problems += [f"{name}: request outside file:// {url}" for url in remote]
            print(f"{name}: {len(figures)} figure(s), {n_sliders} slider(s) moved, "
                  f"{len(remote)} request(s) outside file://")
        problems += [f"{name}: request outside file:// {url}" for url in remote_requests(driver)]
    finally:
        driver.quit()
    print(f"{len(pages) + 1} pages, {sliders} sliders moved")
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
    driver = chrome()
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
        # a same-site neighbour by decoder cosine opens its page
        state = _wait_render(driver, -1)
        link = driver.find_elements("css selector", "#neighbours-decoder a")
        if not link:
            problems.append(f"{driver.execute_script('return location.hash')}: no decoder neighbour to click")
        else:
            want = link[0].get_attribute("href").split("#", 1)[1]
            before = state["renders"]
            link[0].click()
            after = _wait_render(driver, before)
            got = driver.execute_script("return location.hash.slice(1)")
            if got != want or not after["title"].startswith(want.replace("site=", "").replace("&feature=", " feature ")):
                problems.append(f"explorer.html: clicking decoder neighbour {want} opened {got!r} ({after['title']!r})")
            else:
                print(f"clicked a decoder neighbour: {after['title']!r} rendered in {after['ms']:.0f} ms")
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


# ----------------------------------------------------------------------------- the width sweep's explorer
WIDTHS_NOTEBOOK = "notebooks/14_widths_and_splitting.html"


def _click(driver, selector: str, what: str) -> str | None:
    """Click the first link of ``selector``; a problem unless the page it names opens (None: fine)."""
    from urllib.parse import unquote

    links = driver.find_elements("css selector", selector)
    if not links:
        return f"{unquote(driver.execute_script('return location.hash'))}: no {what} to click"
    want = links[0].get_attribute("href").split("#", 1)[1]
    before = driver.execute_script("return EXPLORER.renders")
    links[0].click()
    after = _wait_render(driver, before)
    got = driver.execute_script("return location.hash.slice(1)")
    title = unquote(want).replace("site=", "").replace("&feature=", " feature ")
    if got != want or not after["title"].startswith(title):
        return f"widths/explorer.html: clicking the {what} {unquote(want)} opened {unquote(got)!r} ({after['title']!r})"
    print(f"clicked the {what}: {after['title']!r} rendered in {after['ms']:.0f} ms")
    return None


def _wait_site(driver, site: str, timeout: float = 20.0) -> bool:
    """Wait until the explorer holds ``site``'s data (a hash change within the same page loads it
    after the render count has already moved)."""
    import time

    end = time.time() + timeout
    while time.time() < end:
        if driver.execute_script("return !!(EXPLORER.data.site && EXPLORER.data.site[arguments[0]])", site):
            return True
        time.sleep(0.05)
    return False


def check_width_explorer(html_root: Path) -> list[str]:
    """When notebook 14 links to the width sweep's explorer: a link from the notebook opens a feature's
    page; on a middle width's page, clicking its parent and one of its children opens their pages."""
    import json as _json
    from urllib.parse import quote

    notebook = html_root / WIDTHS_NOTEBOOK
    if not notebook.is_file() or "widths/explorer.html#site=" not in notebook.read_text():
        print("no width sweep in this book (notebook 14 links to no width explorer page)")
        return []
    page = html_root / "widths" / "explorer.html"
    if not page.is_file():
        return [f"{WIDTHS_NOTEBOOK} links to {page}, which is missing"]
    meta_js = (html_root / "widths" / "explorer" / "data" / "meta.js").read_text()
    sites = _json.loads(meta_js[meta_js.index("{"):meta_js.rindex("}") + 1])["sites"]
    problems: list[str] = []
    driver = chrome()
    try:
        driver.get(notebook.resolve().as_uri())  # the notebook's first feature link opens that page
        link = driver.find_elements("css selector", "a[href*='widths/explorer.html#site=']")[0]
        href = link.get_attribute("href")
        driver.get(href)
        state = _wait_render(driver, 0)
        if state["examples"] == 0:
            problems.append(f"{href}: the page the notebook links to shows no examples ({state['title']!r})")
        url, site = page.resolve().as_uri(), sites[1]
        driver.get(f"{url}#site={quote(site)}")
        if not _wait_site(driver, site):
            return problems + [f"widths/explorer.html#site={site}: the site's data never loaded"]
        feature = driver.execute_script(
            "const d = EXPLORER.data.site[arguments[0]], w = d.widths;"
            "for (let f = 0; f < d.n_features; f++) if (w.parent[f] >= 0 && w.children.ptr[f + 1] > w.children.ptr[f])"
            " return f; return -1;", site)
        if feature < 0:
            return problems + [f"widths/explorer.html#site={site}: no feature with a parent and children"]
        for what, selector in (("parent", "#parent-width a"), ("child", "#children-width a")):
            before = driver.execute_script("return EXPLORER.renders")
            driver.get(f"{url}#site={quote(site)}&feature={feature}")
            _wait_render(driver, before)
            problem = _click(driver, selector, what)
            if problem:
                problems.append(problem)
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
    found = check(root) + check_explorer(root) + check_width_explorer(root)
    for line in found:
        print("PROBLEM", line)
    sys.exit(1 if found else 0)

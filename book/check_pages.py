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


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "book/_build/html")
    found = check(root)
    for line in found:
        print("PROBLEM", line)
    sys.exit(1 if found else 0)

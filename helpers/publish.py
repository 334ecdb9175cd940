"""Publish the built book as Jupyter Book projects do: ``ghp-import`` commits ``book/_build/html``
to a ``gh-pages`` branch (with a ``.nojekyll`` file, so that GitHub Pages serves the folders
whose names start with ``_``) and pushes it to a git remote, where GitHub Pages serves it.

``make publish`` runs :func:`publish_book` through ``python -m helpers publish``; the test
pushes to a local bare repository the same way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .errors import ConfigError, MissingArtefactError

#: where ``make book`` writes the book
BOOK_HTML = Path("book") / "_build" / "html"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def publish_book(html: Path | str = BOOK_HTML, remote: str = "origin", branch: str = "gh-pages",
                 repo: Path | str = ".") -> str:
    """Commit the book in ``html`` to ``branch`` of the git repository ``repo`` (replacing what the
    branch held) and force-push it to ``remote`` (a remote's name or a URL/path). Returns a line
    that says what was published."""
    html, repo = Path(html), Path(repo)
    if not (html / "index.html").is_file():
        raise MissingArtefactError(f"no built book in {html} (no index.html): run `make book` first")
    if _git(repo, "rev-parse", "--git-dir").returncode != 0:
        raise ConfigError(f"{repo.resolve()} is not a git repository: publish from a clone of the project")
    is_name = "/" not in remote and ":" not in remote and not Path(remote).exists()
    if is_name and _git(repo, "remote", "get-url", remote).returncode != 0:
        raise ConfigError(f"the repository has no git remote {remote!r}: add your fork "
                          f"(git remote add {remote} URL) or give its URL (make publish REMOTE=URL)")
    try:
        import ghp_import  # noqa: F401 - only to say how to install it
    except ImportError:
        raise ConfigError("ghp-import is not installed: pip install ghp-import "
                          "(or pip install -e '.[book]')") from None
    head = _git(repo, "rev-parse", "--short=12", "HEAD").stdout.strip() or "an unborn branch"
    cmd = [sys.executable, "-m", "ghp_import", "--no-jekyll", "--push", "--force", "--remote", remote,
           "--branch", branch, "--message", f"Publish the book built from {head}", str(html.resolve())]
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or "no message").splitlines()[-1]
        raise ConfigError(f"ghp-import could not publish {html} to {branch!r} of {remote!r} ({said}): "
                          "check the remote's URL and that you may push to it")
    commit = _git(repo, "rev-parse", "--short=12", branch).stdout.strip()
    return f"published {html} to branch {branch!r} of {remote} (commit {commit})"

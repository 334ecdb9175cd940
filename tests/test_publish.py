"""``make publish`` pushes the built book to a gh-pages branch: run here against a local bare repository,
with the very command the Makefile runs."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import main

ROOT = Path(__file__).resolve().parents[1]


def git(*args, cwd=None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A clone of a project with a built book in book/_build/html, and a bare remote."""
    for var in ("AUTHOR", "COMMITTER"):  # CI machines may have no git identity
        monkeypatch.setenv(f"GIT_{var}_NAME", "test")
        monkeypatch.setenv(f"GIT_{var}_EMAIL", "test@example.invalid")
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(remote))
    repo = tmp_path / "project"
    git("init", "-q", str(repo))
    (repo / "README.md").write_text("a project\n")
    git("add", "README.md", cwd=repo)
    git("commit", "-q", "-m", "start", cwd=repo)
    html = repo / "book" / "_build" / "html"
    (html / "_static").mkdir(parents=True)
    (html / "index.html").write_text("<html><body>the book</body></html>\n")
    (html / "_static" / "style.css").write_text("body {}\n")  # served only with .nojekyll
    return repo, remote


def make_publish(remote: Path) -> list[str]:
    """The command ``make publish REMOTE=...`` runs (``make -n`` prints it and runs nothing)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-s", "-n", "-C", str(ROOT), "publish", f"REMOTE={remote}", f"PY={sys.executable}"],
                         capture_output=True, text=True, check=True).stdout
    [line] = [line for line in out.splitlines() if " -m helpers publish " in line]
    return shlex.split(line)


def published(remote: Path) -> set[str]:
    return set(git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "gh-pages").split())


def test_make_publish_pushes_the_book_to_gh_pages(clone):
    repo, remote = clone
    cmd = make_publish(remote)
    assert cmd[1:4] == ["-m", "helpers", "publish"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("published book/_build/html to branch 'gh-pages'")
    assert published(remote) == {"index.html", ".nojekyll", "_static/style.css"}
    page = git("--git-dir", str(remote), "show", "gh-pages:index.html")
    assert page == "<html><body>the book</body></html>\n"
    head = git("rev-parse", "--short=12", "HEAD", cwd=repo).strip()
    assert git("--git-dir", str(remote), "log", "-1", "--format=%s", "gh-pages").strip() == \
        f"Publish the book built from {head}"
    assert git("branch", "--list", "main", "master", cwd=repo).strip()  # the project's branch is untouched
    # a rebuilt book replaces the published one: a page that is gone is gone from the branch too
    html = repo / "book" / "_build" / "html"
    (html / "_static" / "style.css").unlink()
    (html / "index.html").write_text("<html><body>the book, again</body></html>\n")
    again = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert published(remote) == {"index.html", ".nojekyll"}
    assert "again" in git("--git-dir", str(remote), "show", "gh-pages:index.html")


def test_bad_input_gets_one_line(clone, tmp_path, capsys):
    repo, remote = clone
    cases = [
        (["--html", str(tmp_path / "nowhere")], "no built book in"),
        (["--remote", "origin"], "the repository has no git remote 'origin'"),
    ]
    for extra, said in cases:
        assert main(["publish", "--repo", str(repo), "--html", str(repo / "book/_build/html"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {said}") and err.count("\n") == 1, err
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    assert main(["publish", "--repo", str(outside), "--html", str(repo / "book/_build/html"),
                 "--remote", str(remote)]) == 2
    assert "is not a git repository" in capsys.readouterr().err
    assert main(["publish", "--repo", str(repo), "--html", str(repo / "book/_build/html"),
                 "--remote", str(tmp_path / "no-such-remote.git")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ghp-import could not publish") and err.count("\n") == 1, err


def test_the_pages_workflow_builds_the_default_book_and_deploys_that_folder():
    import yaml

    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    build = flow["jobs"]["build"]["steps"]
    runs = [s.get("run", "") for s in build]
    assert "make book" in runs  # the default preset: no EXPERIMENT set anywhere in the workflow
    assert "EXPERIMENT" not in str(flow.get("env", {})) + str(flow["jobs"]["build"].get("env", {}))
    uses = {s["uses"].split("@")[0]: s for s in build if "uses" in s and "cache" not in s["uses"]}
    caches = {s["with"]["path"]: s["with"] for s in build if s.get("uses", "").startswith("actions/cache")}
    uses["actions/cache"] = {"with": caches["artefacts"]}
    assert "~/.cache/sae-evolution" in caches  # the dequantised Gemma weights
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "book/_build/html"  # what make publish pushes
    assert uses["actions/setup-python"]["with"]["cache"] == "pip"
    cache = uses["actions/cache"]["with"]
    assert cache["path"] == "artefacts"
    for part in ("steps.preset.outputs.name", "pyproject.toml", "helpers/**"):
        assert part in cache["key"]
    assert [s["uses"].split("@")[0] for s in flow["jobs"]["deploy"]["steps"]] == ["actions/deploy-pages"]
    assert flow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    # the cache key's preset is the Makefile's default, the one make book builds
    from helpers.experiment import PRESETS

    preset = next(s for s in build if s.get("id") == "preset")["run"]
    read = preset.split("$(")[1].split(")")[0]
    default = subprocess.run(read, shell=True, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert default in PRESETS

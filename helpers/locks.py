"""One writer per experiment folder, and the normal end of a step that fails or is interrupted.

Every step that writes into ``artefacts/<experiment>/``, ``artefacts/saes/<experiment>/`` or a
site folder (``book/_explorer``, ``book/_browser``) is decorated with :func:`writes`. For as long
as it runs:

- it holds an exclusive lock on each of its folders: ``fcntl.flock`` on ``.<folder>.lock``
  beside the folder, which records the holder's pid, step, command and start time. A second
  writer waits, saying who holds the folder, then goes on (``prepare`` then finds the result and
  reuses it); with :func:`set_waiting` ``(False)`` (the command line's ``--no-wait``) it stops at
  once with one line (:class:`~helpers.errors.BusyError`). Readers take no lock: every file is
  replaced atomically. The lock dies with its holder, so a killed writer's folder is taken
  over, and what it left half-written is swept (:func:`~helpers.io.sweep`). Nested steps (``prepare``
  runs the others) hold the lock once; under torchrun only rank 0, the writer, locks. A folder
  that cannot hold a lock file (read-only) is not locked: no one can write there.
- its writes form one :func:`~helpers.io.transaction`: if it fails or is interrupted, the
  files it replaced are put back and its temporary files removed;
- a full or read-only disk becomes one line (:class:`~helpers.errors.DiskError`).

:func:`catch_signals` makes SIGINT and SIGTERM raise :class:`Interrupted`, and
:func:`interruption` says in one line what was done, what was kept (:func:`note_kept`: the
last checkpoint) and the command that resumes.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import functools
import inspect
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import BusyError, DiskError, SaeEvolutionError
from .io import DISK_ERRNOS, stats_dir, sweep, transaction

log = logging.getLogger(__name__)

_WAIT = [True]
#: the folders whose lock this process holds
_HELD: set[Path] = set()
#: this run's steps: those done, the one that stopped (and the folder it was waiting for), what it
#: kept, when the run began
_RUN: dict[str, Any] = {"done": [], "stopped": None, "waiting": None, "kept": None, "t0": time.monotonic()}


def set_waiting(wait: bool) -> None:
    """Whether a writer waits for a busy folder (default) or stops at once with one line."""
    _WAIT[0] = bool(wait)


def lock_file(folder: str | Path) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` beside it (a folder swapped whole keeps it)."""
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}.lock"


def _command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("helpers", "__main__.py")):
        argv[:1] = ["python", "-m", "helpers"]
    return shlex.join(argv)


def holder(fd: int) -> str:
    """Who holds the lock whose file is open as ``fd``, in words."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} ({info['step']}: `{info['command']}`, since {info['started']})"
    except (ValueError, KeyError, OSError):
        return "another process"


@contextmanager
def writer_lock(folder: str | Path, step: str = "a step") -> Iterator[None]:
    """Hold the exclusive writer lock of ``folder`` (see the module docstring)."""
    folder = Path(folder).resolve()
    if folder in _HELD or int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    path = lock_file(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        if err.errno not in DISK_ERRNOS:
            raise
        fd = None  # read-only: no one writes here (the step says so if it has to)
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(fd)
            if not _WAIT[0]:
                raise BusyError(f"{folder} is being written by {who}: wait until it ends, or run "
                                "without --no-wait to wait for it") from None
            log.warning("%s waits: %s is being written by %s", step, folder, who)
            t0 = time.monotonic()
            _RUN["waiting"] = folder
            fcntl.flock(fd, fcntl.LOCK_EX)
            _RUN["waiting"] = None
            log.warning("%s goes on after waiting %.0f s for %s", step, time.monotonic() - t0, folder)
        try:  # who holds it, for the next writer's message (best effort: the disk may be full)
            info = {"pid": os.getpid(), "step": step, "command": _command(),
                    "started": _dt.datetime.now().isoformat(sep=" ", timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            pass
        sweep(folder)  # what a killed writer left
        _HELD.add(folder)
        try:
            yield
        finally:
            _HELD.discard(folder)
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
    finally:
        os.close(fd)  # releases the lock


def stats_out(args: dict) -> Path:
    """The statistics folder of a step's arguments: ``out``, else ``artefacts/<stats_name>``."""
    return Path(args["out"]) if args.get("out") is not None else stats_dir(args["exp"].stats_name)


def writes(step: str, *folders: Callable[[dict], Any]):
    """Decorate the function of a writing ``step``: ``folders`` are functions of its arguments (by
    name, defaults applied) giving the folders it writes into (``None``: none). See the module
    docstring for what the decorated function does around the step."""

    def decorate(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            paths = sorted({Path(p).resolve() for f in folders if (p := f(bound.arguments)) is not None})
            try:
                with ExitStack() as stack:
                    for path in paths:
                        stack.enter_context(writer_lock(path, step))
                    stack.enter_context(transaction())
                    result = fn(*args, **kwargs)
            except BaseException as err:
                _RUN["stopped"] = _RUN["stopped"] or step
                if isinstance(err, OSError) and not isinstance(err, SaeEvolutionError) and _disk(err, paths):
                    raise DiskError.of(err, step, paths[0] if paths else None) from None
                raise
            _RUN["done"].append(step)
            _RUN["kept"] = None
            return result

        return run

    return decorate


def _disk(err: OSError, paths: Sequence[Path]) -> bool:
    """A full disk, or a read-only one where the step writes (not a file it could not read)."""
    import errno

    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return True
    if err.errno not in (errno.EACCES, errno.EPERM):
        return False
    if not err.filename:
        return True
    name = Path(os.fsdecode(err.filename)).absolute()
    return any(p == name or p in name.parents or p.parent == name.parent for p in paths)


def note_kept(what: str) -> None:
    """What an interruption of the running step keeps (e.g. its last checkpoint), in words."""
    _RUN["kept"] = what


# --------------------------------------------------------------------------- interruption
class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (see :func:`catch_signals`)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum, frame):
    raise Interrupted(signum)


def catch_signals() -> Callable[[], None]:
    """Start a run: forget the steps of an earlier one, and make SIGINT and SIGTERM raise
    :class:`Interrupted` (in the main thread), so that every ``finally`` and transaction cleans up.
    Returns the function that puts the previous handlers back."""
    _RUN.update(done=[], stopped=None, waiting=None, kept=None, t0=time.monotonic())
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in old.items()]


def ignore_interrupts() -> None:
    """In a worker process: leave SIGINT (a terminal's Ctrl-C reaches the whole group) to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def exit_status(exc: KeyboardInterrupt) -> int:
    """130 for SIGINT, 143 for SIGTERM."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def interruption(exc: KeyboardInterrupt, argv: Sequence[str], command: str) -> str:
    """One line: what this run did, what it kept, and the command that resumes (``argv``: the
    command line after ``python -m helpers``; ``command``: its command)."""
    name = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
    seconds = time.monotonic() - _RUN["t0"]
    done, stopped, kept = _RUN["done"], _RUN["stopped"], _RUN["kept"]
    rerun = shlex.join(["python", "-m", "helpers", *argv])
    line = f"interrupted by {name} after {seconds:.0f} s"
    if done:
        line += f"; done: {', '.join(done)}"
    if _RUN["waiting"] is not None:
        line += f"; {stopped} stopped while it waited for {_RUN['waiting']}: nothing was written"
    elif stopped:
        line += f"; {stopped} stopped: its temporary files were removed and the previous artefacts are unchanged"
    else:
        line += "; nothing was written"
    if kept is None:
        return f"{line}; rerun `{rerun}`"
    i = list(argv).index(command) if command in argv else 0
    resume = shlex.join(["python", "-m", "helpers", *argv[:i], "collect", *argv[i + 1:]]
                        + ([] if "--resume" in argv else ["--resume"]))
    then = "" if command == "collect" else f", then `{rerun}`"
    return f"{line}; kept: {kept}; resume with `{resume}`{then}"

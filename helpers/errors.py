"""Exceptions raised by the helpers.

Every error says what went wrong *and* how to fix it, in one line, so that a
notebook or the command line shows something a user can act on instead of a
long traceback.
"""

from __future__ import annotations


class SaeEvolutionError(Exception):
    """Base class of every error the helpers raise on purpose."""


class ConfigError(SaeEvolutionError, ValueError):
    """An experiment configuration (preset, site, threshold, budget...) is invalid."""


class HubUnavailableError(SaeEvolutionError, RuntimeError):
    """A model, SAE or dataset must come from the Hugging Face hub, which is unreachable."""


class MissingArtefactError(SaeEvolutionError, FileNotFoundError):
    """An artefact (trained SAEs, statistics) that a step needs has not been produced yet."""


class ArtefactMismatchError(SaeEvolutionError, ValueError):
    """An artefact on disk belongs to another experiment than the one asked for."""


class CorruptArtefactError(SaeEvolutionError, ValueError):
    """An artefact on disk is truncated or corrupted (unreadable, or its checksum differs)."""


class DiskError(SaeEvolutionError, OSError):
    """The disk is full, or a folder to write into is read-only."""

    def __str__(self) -> str:
        return str(self.strerror)

    @classmethod
    def of(cls, err: OSError, what: str, folder=None) -> "DiskError":
        """One line for ``err`` (``ENOSPC``, ``EROFS``...) raised while ``what`` wrote into ``folder``."""
        import errno

        where = err.filename or folder
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            why = f"no space left on the device of {where}" if where else "no space left on the device"
            return cls(err.errno, f"{what} stopped: {why}; its temporary files were removed and the previous "
                                  "artefacts are unchanged: free some space, or write elsewhere (--out, or "
                                  "$SAE_EVOLUTION_ARTEFACTS), and rerun")
        return cls(err.errno, f"{what} cannot write into {where} ({err.strerror}): make it writable, or write "
                              "elsewhere (--out, or $SAE_EVOLUTION_ARTEFACTS)")


class BusyError(SaeEvolutionError, RuntimeError):
    """Another process is writing the same experiment folder (and the caller asked not to wait)."""

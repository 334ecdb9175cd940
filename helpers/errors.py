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

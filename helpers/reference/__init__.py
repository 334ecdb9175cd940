"""The reference study's and Feature Flow's figures, and ours beside them.

:mod:`.figures` keeps their figures as data with their sources (the study's own arrays ship as
``spar2024.npz``); :mod:`.compare` measures the same quantities on an experiment's artefacts.
The figures that draw them are in :mod:`helpers.notebook.reference_plots`.
"""

from .compare import (
    DISAPPEAR_THRESHOLD,
    QUANTITIES,
    Ours,
    check_quantities,
    comparison_rows,
    load_ours,
    max_summary,
    study_max_summary,
)
from .figures import FEATURE_FLOW, STUDY, Figure, Source, StudyArrays, figures, load_study, pack_study

__all__ = [
    "DISAPPEAR_THRESHOLD", "FEATURE_FLOW", "Figure", "Ours", "QUANTITIES", "STUDY", "Source", "StudyArrays",
    "check_quantities", "comparison_rows", "figures", "load_ours", "load_study", "max_summary", "pack_study",
    "study_max_summary",
]

"""Explanations of features with detection and fuzzing scores, offline.

- :mod:`.stream`: the pass's token stream, the keys a rule tests, the held-out split, windows;
- :mod:`.rules`: each feature's rule, chosen on training text;
- :mod:`.scores`: detection (AUROC, balanced accuracy) and fuzzing scores on held-out text;
- :mod:`.artefact`: ``explanations.npz`` of an experiment (``python -m helpers explain``);
- :mod:`.llm` and :mod:`.prompts`: an optional hub causal LM as explainer and scorer.
- :mod:`.concepts`, :mod:`.completeness`, :mod:`.completeness_run`: concept families (data in
  ``concept_lists/``), their mentions, and the share of members some feature covers (issue 18).
"""

from .rules import Rules, choose_rules
from .scores import detection_from_scores, fuzzing_from_predictions, score_rules
from .stream import KINDS, TokenStream, key_spaces, token_stream

__all__ = ["KINDS", "Rules", "TokenStream", "choose_rules", "detection_from_scores", "fuzzing_from_predictions",
           "key_spaces", "score_rules", "token_stream"]

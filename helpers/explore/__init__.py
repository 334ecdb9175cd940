"""Looking up features: their examples in context, short labels, and the static feature explorer
(:mod:`.pages` the data model, :mod:`.contexts` the example windows re-run, :mod:`.site` the
writer, :mod:`.links` links from the notebooks)."""

from .examples import FeatureText, examples, feature_text, top_tokens, topical_features
from .links import feature_anchor, feature_link
from .site import ExplorerResult, build_explorer

__all__ = ["ExplorerResult", "FeatureText", "build_explorer", "examples", "feature_anchor", "feature_link",
           "feature_text", "top_tokens",
           "topical_features"]

"""Looking up features: their examples in context and short labels."""

from .examples import examples, top_tokens, topical_features

__all__ = ["examples", "top_tokens", "topical_features"]

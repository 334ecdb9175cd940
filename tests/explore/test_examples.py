import numpy as np
import pytest

from helpers.errors import ConfigError
from helpers.explore.examples import FeatureText, examples, feature_text, top_tokens
from helpers.subject.corpus import Document


def test_feature_text_reads_sites_by_index_or_name(tiny_tokenizer):
    docs = [Document(0, "Alpha", "the cat sat on the mat"), Document(1, "Beta", "a dog ran in the park")]
    hi_doc = np.array([[[1, 0, -1]], [[0, 0, 1]]])  # [sites, features, k]
    top = {"hi_values": np.array([[[3.0, 2.0, np.nan]], [[5.0, 4.0, 1.0]]]), "hi_doc": hi_doc,
           "hi_pos": np.array([[[1, 0, -1]], [[1, 4, 2]]])}
    text = FeatureText(top, docs, tiny_tokenizer, ("a", "b"))
    for site in (1, "b"):
        assert text.label(site, 0, n=2) == top_tokens(top, 1, 0, docs, tiny_tokenizer, n=2)
        assert text.examples(site, 0, n=2, context_tokens=1) == examples(top, 1, 0, docs, tiny_tokenizer, n=2,
                                                                         context_tokens=1)
    assert [r["document"] for r in text.examples("a", 0)] == ["Beta", "Alpha"]
    assert text.label(0, 0) != text.label(1, 0)
    with pytest.raises(ConfigError, match="unknown site 'c'"):
        text.label("c", 0)


def test_feature_text_of_an_experiment(artefacts_tmp, monkeypatch, tiny_tokenizer):
    from helpers.experiment import PRESETS

    exp = PRESETS["smoke"]
    top = {"hi_doc": np.zeros((len(exp.sites), 1, 1), int)}
    monkeypatch.setattr("helpers.stats.artefacts.load_artefact", lambda e, name: top if name == "top_examples" else None)
    text = feature_text(exp, tokenizer=tiny_tokenizer)
    assert text.top is top and text.tokenizer is tiny_tokenizer and text.sites == tuple(exp.sites)
    assert len(text.documents) == exp.max_documents

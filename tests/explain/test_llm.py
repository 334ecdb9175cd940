"""The optional LLM explainer and scorer: prompts, parsing, and scores through the same functions
(a tiny random Llama for the plumbing, a rule-following fake judge for known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.errors import ConfigError
from helpers.explain import prompts
from helpers.explain.llm import LlmJudge, Windows, feature_examples, llm_explanations, llm_scores
from helpers.explain.scores import detection_from_scores

WORDS = [" the", " river", " runs", " into", " a", " lake", " near", " the", " old", " town", ".",
         " A", " river", " is", " water"] * 4


def river_windows():
    tokens = list(WORDS)
    window = np.arange(len(tokens)) // 5
    fires = np.stack([np.array([t == " river" for t in tokens]), np.arange(len(tokens)) % 7 == 0], 1)
    return Windows(tokens, window, fires, features=[3, 8])


def test_prompts_mark_parse_and_ask():
    ex = feature_examples(river_windows(), 3, n=2)
    assert len(ex) == 2 and all(any(f) for _, f in ex)
    text = prompts.explain_prompt(ex)
    assert "<< river>>" in text and text.rstrip().endswith("Explanation:")
    assert prompts.parse_explanation("  Explanation: rivers and <<lakes>>.\nignored") == "rivers and lakes"
    assert prompts.parse_explanation("\n\n") == ""
    assert "<< lake>>" in prompts.fuzz_prompt("water", WORDS[:6], 5)
    assert "the river runs" in prompts.detect_prompt("water", WORDS[:3])


class RuleJudge(LlmJudge):
    """Answers as the rule "the token is ' river'" would (no model): known scores."""

    def __init__(self):
        pass

    def yes_probability(self, texts):
        def yes(t):
            body = t.split("Text:")[1]
            return "<< river>>" in body if "marked" in t else " river" in body
        return np.array([float(yes(t)) for t in texts])

    def generate(self, texts, max_new_tokens=40):
        return ["Explanation: the word river" for _ in texts]


def test_a_judge_that_follows_the_firing_rule_scores_one():
    w = river_windows()
    text = llm_explanations(RuleJudge(), {3: feature_examples(w, 3)})
    assert text == {3: "the word river"}
    res = llm_scores(RuleJudge(), {3: text[3]}, w)
    assert res["detection_auroc"][0] == pytest.approx(1) and res["balanced_accuracy"][0] == pytest.approx(1)
    assert res["fuzzing"][0] == pytest.approx(1)
    assert np.isnan(res["detection_auroc"][1])  # no explanation for feature 8


def test_tiny_random_llm_runs_through_the_same_scores(tiny_llama_dir):
    judge = LlmJudge.from_name(str(tiny_llama_dir), batch_size=4)
    w = river_windows()
    text = llm_explanations(judge, {f: feature_examples(w, f, n=2) for f in w.features}, max_new_tokens=5)
    assert set(text) == {3, 8} and all(isinstance(t, str) for t in text.values())
    text = {f: t or "anything" for f, t in text.items()}  # garbage, but an explanation each
    res = llm_scores(judge, text, w)
    members = w.members()
    p = judge.yes_probability([prompts.detect_prompt(text[3], [w.tokens[j] for j in m]) for m in members])
    np.testing.assert_allclose(res["window_yes"][:, 0], p, rtol=1e-5)
    active = np.zeros((len(members), 2), bool)
    np.logical_or.at(active, w.window, w.fires)
    want = detection_from_scores(res["window_yes"], active, 0.5)
    np.testing.assert_allclose(res["detection_auroc"], want["auroc"])
    assert np.all((p > 0) & (p < 1)) and np.all((res["fuzzing"] >= 0) & (res["fuzzing"] <= 1))


def test_an_unreachable_model_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot load the LLM"):
        LlmJudge.from_name(str(tmp_path / "no-such-model"))

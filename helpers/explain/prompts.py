"""Every prompt of the optional LLM explainer and scorer (:mod:`.llm`), in one place.

Examples are shown as delphi shows them: the text of a window with the tokens where the feature
fires between ``<<`` and ``>>``. The scorer answers yes or no; its probability of "yes" is read
from the next-token logits (:meth:`~.llm.LlmJudge.yes_probability`).
"""

from __future__ import annotations

import re
from typing import Sequence

MARK = ("<<", ">>")

EXPLAIN = """We study a neuron of a language model. Below are texts where it fires; the tokens where it \
fires are marked between << and >>.

{examples}

Say in a few words what the marked tokens have in common (a word, a part of a word, what comes \
before them, or a topic). Answer on one line that starts with "Explanation:".
Explanation:"""

DETECT = """A neuron of a language model fires on: {explanation}.
Does it fire anywhere in this text?

Text: {text}

Answer yes or no.
Answer:"""

FUZZ = """A neuron of a language model fires on: {explanation}.
In this text one token is marked between << and >>. Does the neuron fire on the marked token?

Text: {text}

Answer yes or no.
Answer:"""

YES = ("yes", " yes", "Yes", " Yes")
NO = ("no", " no", "No", " No")


def mark(tokens: Sequence[str], fires: Sequence[bool]) -> str:
    """The text of ``tokens`` with the firing ones between ``<<`` and ``>>``."""
    return "".join(f"{MARK[0]}{t}{MARK[1]}" if f else t for t, f in zip(tokens, fires)).strip()


def explain_prompt(examples: Sequence[tuple[Sequence[str], Sequence[bool]]]) -> str:
    """The explainer's prompt from ``(tokens, fires)`` windows of the feature's training text."""
    body = "\n".join(f"{i + 1}. {mark(t, f)}" for i, (t, f) in enumerate(examples))
    return EXPLAIN.format(examples=body)


def parse_explanation(generated: str) -> str:
    """The explanation in a generated answer: the rest of the first non-empty line (after an
    ``Explanation:`` if it repeats it), without the marks; "" when there is none."""
    for line in generated.splitlines():
        line = re.sub(r"^\s*explanation\s*:\s*", "", line, flags=re.I).strip()
        if line:
            return line.replace(MARK[0], "").replace(MARK[1], "").strip(" .")[:200]
    return ""


def detect_prompt(explanation: str, tokens: Sequence[str]) -> str:
    """The detection question for one window."""
    return DETECT.format(explanation=explanation, text="".join(tokens).strip())


def fuzz_prompt(explanation: str, tokens: Sequence[str], i: int) -> str:
    """The fuzzing question for token ``i`` of a window (that token marked)."""
    marks = [j == i for j in range(len(tokens))]
    return FUZZ.format(explanation=explanation, text=mark(tokens, marks))

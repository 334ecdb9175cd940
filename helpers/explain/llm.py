"""An optional LLM as explainer and scorer: any hub causal LM (e.g. ``google/gemma-3-1b-it``).

Never needed offline: the default explanations are the rules of :mod:`.rules`. Online users can
replace the rule by an LLM's explanation of the same feature and score it **with the same
functions and on the same held-out windows** (:func:`~.scores.detection_from_scores` on the
LLM's probability of "yes" per window, threshold 0.5; :func:`~.scores.fuzzing_from_predictions`
on its yes/no per token of the activating windows). The prompts are in :mod:`.prompts`.

Cost: one generation per feature, one forward pass per held-out window and one per token of the
activating windows, per feature: score a sample of features, not all of them.

    from helpers.explain.llm import explain_with_llm
    explain_with_llm(exp, "google/gemma-3-1b-it", "blocks.4.hook_resid_post", [12, 345])

(the pieces: :class:`LlmJudge`, :func:`experiment_windows`, :func:`feature_examples`,
:func:`llm_explanations`, :func:`sample_windows`, :func:`llm_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from . import prompts
from .scores import detection_from_scores, fuzzing_from_predictions


@dataclass
class Windows:
    """Text cut into windows: ``tokens`` ``[N]`` (as in running text), ``window`` ``[N]`` (index
    of each token's window, :func:`~.stream.windows`) and ``fires`` ``[N, F]`` (bool) of the
    features asked about, in the order of ``features``."""

    tokens: Sequence[str]
    window: np.ndarray
    fires: np.ndarray
    features: Sequence[int]

    def column(self, feature: int) -> int:
        return list(self.features).index(feature)

    def members(self) -> list[np.ndarray]:
        """The token indices of each window."""
        order = np.argsort(self.window, kind="stable")
        bounds = np.searchsorted(self.window[order], np.arange(int(self.window.max(initial=-1)) + 2))
        return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def feature_examples(w: Windows, feature: int, n: int = 10) -> list[tuple[list[str], list[bool]]]:
    """The ``n`` windows of ``w`` where ``feature`` fires most, as ``(tokens, fires)``."""
    c = w.column(feature)
    members = w.members()
    counts = np.array([w.fires[m, c].sum() for m in members])
    best = [i for i in np.argsort(-counts, kind="stable")[:n] if counts[i] > 0]
    return [([w.tokens[j] for j in members[i]], [bool(x) for x in w.fires[members[i], c]]) for i in best]


class LlmJudge:
    """A causal LM that writes explanations and answers yes or no."""

    def __init__(self, model, tokenizer, device: str | torch.device = "cpu", batch_size: int = 8):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device, self.batch_size = torch.device(device), batch_size
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.yes_ids, self.no_ids = self._first_ids(prompts.YES), self._first_ids(prompts.NO)
        if set(self.yes_ids) & set(self.no_ids):
            raise ConfigError("the LLM's tokenizer starts 'yes' and 'no' with the same token: choose another model")

    @classmethod
    def from_name(cls, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32, **kw) -> "LlmJudge":
        """Load ``name`` (a hub id or a local folder) with transformers."""
        import transformers

        try:
            tok = transformers.AutoTokenizer.from_pretrained(name)
            model = transformers.AutoModelForCausalLM.from_pretrained(name, torch_dtype=dtype).to(device)
        except OSError as err:
            raise ConfigError(f"cannot load the LLM {name!r} ({str(err).splitlines()[0]}): it needs the "
                              "Hugging Face hub or a local copy; the offline explanations need none") from None
        return cls(model, tok, device, **kw)

    def _first_ids(self, words) -> list[int]:
        ids = {self.tokenizer.encode(w, add_special_tokens=False)[0] for w in words}
        return sorted(ids)

    def _text(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt

    def _batches(self, texts: Sequence[str]):
        for lo in range(0, len(texts), self.batch_size):
            enc = self.tokenizer([self._text(t) for t in texts[lo:lo + self.batch_size]], return_tensors="pt",
                                 padding=True, add_special_tokens=not getattr(self.tokenizer, "chat_template", None))
            yield {k: v.to(self.device) for k, v in enc.items()}

    @torch.no_grad()
    def yes_probability(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts)]`` P(yes) against no, from the next-token logits (summed over the spellings
        of :data:`~.prompts.YES` and :data:`~.prompts.NO`)."""
        out = []
        for enc in self._batches(texts):
            logits = self.model(**enc).logits[:, -1].float().log_softmax(-1)
            yes = logits[:, self.yes_ids].logsumexp(-1)
            no = logits[:, self.no_ids].logsumexp(-1)
            out.append(torch.sigmoid(yes - no).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    @torch.no_grad()
    def generate(self, texts: Sequence[str], max_new_tokens: int = 40) -> list[str]:
        """Greedy continuations of ``texts``."""
        out = []
        for enc in self._batches(texts):
            ids = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            out += self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return out


def llm_explanations(judge: LlmJudge, examples: dict[int, list], max_new_tokens: int = 40) -> dict[int, str]:
    """``{feature: explanation}`` written by the LLM from ``{feature: (tokens, fires) windows}``."""
    features = list(examples)
    texts = judge.generate([prompts.explain_prompt(examples[f]) for f in features], max_new_tokens)
    return {f: prompts.parse_explanation(t) for f, t in zip(features, texts)}


def llm_scores(judge: LlmJudge, explanations: dict[int, str], heldout: Windows, threshold: float = 0.5
               ) -> dict[str, np.ndarray]:
    """Detection AUROC, balanced accuracy and fuzzing ``[len(heldout.features)]`` of the LLM's
    ``explanations`` on the held-out windows (NaN for a feature without an explanation), scored by
    :func:`~.scores.detection_from_scores` and :func:`~.scores.fuzzing_from_predictions`."""
    members = heldout.members()
    W, F = len(members), len(heldout.features)
    window_p = np.zeros((W, F))
    token_yes = np.zeros(heldout.fires.shape, bool)
    active = np.zeros((W, F), bool)
    np.logical_or.at(active, heldout.window, heldout.fires)
    texts = [[heldout.tokens[j] for j in m] for m in members]
    for c, f in enumerate(heldout.features):
        text = explanations.get(f, "")
        if not text:
            continue
        window_p[:, c] = judge.yes_probability([prompts.detect_prompt(text, t) for t in texts])
        asked = [(j, i) for w in np.flatnonzero(active[:, c]) for i, j in enumerate(members[w])]
        if asked:
            p = judge.yes_probability([prompts.fuzz_prompt(text, texts[heldout.window[j]], i) for j, i in asked])
            token_yes[[j for j, _ in asked], c] = p >= threshold
    det = detection_from_scores(window_p, active, threshold)
    fuzz = fuzzing_from_predictions(token_yes, heldout.fires, heldout.window)
    missing = np.array([not explanations.get(f) for f in heldout.features])
    return {"detection_auroc": np.where(missing, np.nan, det["auroc"]),
            "balanced_accuracy": np.where(missing, np.nan, det["balanced_accuracy"]),
            "fuzzing": np.where(missing, np.nan, fuzz), "window_yes": window_p}


def experiment_windows(exp, site: str, features: Sequence[int], out=None, window: int | None = None,
                       heldout_every: int | None = None) -> tuple[Windows, Windows]:
    """``(training, held-out)`` :class:`Windows` of ``features`` of ``site``: the documents split
    and cut as :func:`~.artefact.build_explanations` does (same held-out documents, same
    windows), firings from the codes the statistics pass recorded."""
    from ..io import stats_dir
    from ..stats.codes import open_codes
    from ..subject.corpus import stream_documents
    from ..subject.models import load_tokenizer
    from .artefact import MAX_TOKENS, _token_strings
    from .stream import HELDOUT_EVERY, WINDOW, heldout_mask, token_stream, windows

    window, heldout_every = window or WINDOW, heldout_every or HELDOUT_EVERY
    out = out if out is not None else stats_dir(exp.stats_name)
    codes = open_codes(exp, out, [site])
    if codes is None:
        raise ConfigError(f"the LLM scorer reads the per-token codes of the statistics pass, and {out} has none: "
                          f"rerun `python -m helpers collect --experiment {exp.name}` on a CPU")
    tokenizer = load_tokenizer(exp)
    stream = token_stream(stream_documents(exp), tokenizer, exp.token_budget)
    stream = stream.subset(np.arange(stream.n) < MAX_TOKENS)
    token, feat = codes.firings(site)
    features = [int(f) for f in features]
    col = np.full(int(exp.sae_width), -1)
    col[features] = np.arange(len(features))
    pick = (col[np.asarray(feat, np.int64)] >= 0) & (token < stream.n)
    fires = np.zeros((stream.n, len(features)), bool)
    fires[token[pick], col[np.asarray(feat, np.int64)[pick]]] = True
    strings = _token_strings(tokenizer, exp.model_spec.family, np.unique(stream.ids))
    held = heldout_mask(stream.doc, heldout_every)
    parts = []
    for mask in (~held, held):
        sub = stream.subset(mask)
        parts.append(Windows([strings[int(i)] for i in sub.ids], windows(sub, window), fires[mask], features))
    return parts[0], parts[1]


def sample_windows(w: Windows, column: int, n: int, seed: int = 0) -> Windows:
    """One feature's windows of ``w``: up to ``n / 2`` activating and as many non-activating ones,
    drawn with ``seed`` (an LLM reads every one: the sample bounds its cost)."""
    members = w.members()
    active = np.array([w.fires[m, column].any() for m in members])
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(active), np.flatnonzero(~active)
    k = min(n // 2, pos.size)
    chosen = np.sort(np.concatenate([rng.choice(pos, k, replace=False),
                                     rng.choice(neg, min(n - k, neg.size), replace=False)]))
    rows = np.concatenate([members[i] for i in chosen]) if chosen.size else np.zeros(0, np.int64)
    renumber = np.repeat(np.arange(chosen.size), [members[i].size for i in chosen])
    return Windows([w.tokens[j] for j in rows], renumber, w.fires[rows][:, [column]], [w.features[column]])


def explain_with_llm(exp, model: "str | LlmJudge", site: str, features: Sequence[int], out=None,
                     device: str = "cpu", n_examples: int = 10, n_windows: int = 100, seed: int = 0
                     ) -> dict[str, np.ndarray | list]:
    """Explain ``features`` of ``site`` with the causal LM ``model`` (a hub id such as
    ``google/gemma-3-1b-it``, a local folder, or a loaded :class:`LlmJudge`) from their ``n_examples``
    busiest training windows, and score each explanation on a sample of ``n_windows`` held-out
    windows (:func:`sample_windows`) with the offline scores' functions.

    Returns ``explanation`` (a list of texts) and ``detection_auroc``, ``balanced_accuracy``,
    ``fuzzing`` ``[len(features)]``.
    """
    judge = model if isinstance(model, LlmJudge) else LlmJudge.from_name(model, device)
    train, held = experiment_windows(exp, site, features, out)
    texts = llm_explanations(judge, {f: feature_examples(train, f, n_examples) for f in train.features})
    res = {k: np.full(len(train.features), np.nan) for k in ("detection_auroc", "balanced_accuracy", "fuzzing")}
    for c, f in enumerate(train.features):
        one = llm_scores(judge, {f: texts[f]}, sample_windows(held, c, n_windows, seed))
        for k in res:
            res[k][c] = one[k][0]
    return {"explanation": [texts[f] for f in train.features], **res}

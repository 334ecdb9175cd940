"""How an SAE's quality moves with its training budget, at one site: where is the knee?

Two axes, each measured on the same held-out tokens as the preset's SAEs (:func:`.training.training_data`):

- **samples per feature** (``samples / width``): the SAE trains on every training token the preset
  has, for ``samples_per_feature x width`` samples (shuffled passes over them);
- **distinct training tokens**: the SAE trains for a fixed number of samples per feature
  (``tokens_samples_per_feature``, 300 by default: one of the first axis's budgets, so the run on
  every token serves both axes) on a share of the training tokens only (whole rows of
  ``context_length`` tokens, a seeded random choice), so it sees each token more often.

Each budget gives FVU, L0, the dead fraction and, on a causal LM, the loss recovered
(:func:`.saes.sae_quality`, :func:`.splice.loss_recovered`). The rows are written, one budget at a
time (a rerun resumes), to ``artefacts/saes/<preset>-convergence/<site>/convergence.json`` with the
study (:class:`ConvergenceStudy`) beside them in ``study.json``.

The **knee** of an axis (:func:`knee`) is the smallest budget whose doubling improves no quality by
more than :data:`KNEE_TOLERANCE` (FVU by 10% of its value, the dead share and the loss recovered by one
point each), and no larger budget by more than twice that.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..experiment import DEFAULT_EXPERIMENT, Experiment, get_experiment
from ..io import atomic_write_json, sae_dir
from ..locks import writes
from .saes import sae_quality

log = logging.getLogger(__name__)

ROWS_FILE = "convergence.json"
STUDY_FILE = "study.json"
#: the qualities compared along an axis, and whether lower is better
QUALITIES = {"fvu": True, "dead_fraction": True, "loss_recovered": False}


@dataclass(frozen=True)
class ConvergenceStudy:
    """The budgets of a convergence study at one site of ``base``.

    ``samples_per_feature``: the budgets of the first axis (all training tokens); ``token_shares``:
    the shares of the training tokens of the second axis, each at ``tokens_samples_per_feature``;
    ``site``: default the middle site of the preset.
    """

    base: Experiment | str = DEFAULT_EXPERIMENT
    site: str | None = None
    samples_per_feature: tuple[float, ...] = (75.0, 150.0, 300.0, 600.0, 1200.0)
    token_shares: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
    tokens_samples_per_feature: float = 300.0

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        base = get_experiment(self.base) if isinstance(self.base, str) else self.base
        if not isinstance(base, Experiment) or base.sae_source != "trained":
            raise ConfigError(f"base={self.base!r} must be a preset that trains its SAEs (a convergence study "
                              "trains SAEs at several budgets)")
        set_("base", base)
        site = self.site if self.site is not None else base.sites[len(base.sites) // 2]
        if site not in base.sites:
            raise ConfigError(f"site {site!r} is not a site of preset {base.name!r}: choose one of "
                              f"{list(base.sites)} (--site)")
        set_("site", site)
        spf = tuple(float(x) for x in self.samples_per_feature)
        if len(spf) < 4 or any(not x > 0 for x in spf) or list(spf) != sorted(set(spf)):
            raise ConfigError(f"samples_per_feature={list(self.samples_per_feature)} must hold at least 4 increasing "
                              "budgets > 0 (training samples per feature)")
        set_("samples_per_feature", spf)
        shares = tuple(float(x) for x in self.token_shares)
        if len(shares) < 2 or any(not 0 < x <= 1 for x in shares) or list(shares) != sorted(set(shares)):
            raise ConfigError(f"token_shares={list(self.token_shares)} must hold at least 2 increasing shares of "
                              "the training tokens in (0, 1]")
        set_("token_shares", shares)
        if not self.tokens_samples_per_feature > 0:
            raise ConfigError(f"tokens_samples_per_feature={self.tokens_samples_per_feature!r} must be > 0")
        set_("tokens_samples_per_feature", float(self.tokens_samples_per_feature))

    @property
    def folder(self) -> Path:
        return sae_dir(f"{self.base.name}-convergence", self.site)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self) | {"base": self.base.name}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def budgets(self, n_tokens: int) -> list[tuple[str, float, int]]:
        """``(axis, samples per feature, training tokens)`` of every run, over ``n_tokens`` training
        tokens: the samples axis on all of them, then the tokens axis at ``tokens_samples_per_feature``
        (a run on all tokens at a budget of both axes is run once)."""
        spf = self.tokens_samples_per_feature
        runs = [("samples", s, n_tokens) for s in self.samples_per_feature]
        runs += [("tokens", spf, int(round(share * n_tokens))) for share in self.token_shares]
        return runs


def shipped_samples_per_feature(exp: Experiment, n_tokens: int) -> float:
    """The samples per feature the preset's SAEs train for, over ``n_tokens`` training tokens."""
    return exp.sae_epochs * n_tokens / exp.sae_width


def token_subset(n: int, keep: int, row: int, seed: int) -> torch.Tensor:
    """Indices of ``keep`` of ``n`` tokens: whole rows of ``row`` consecutive tokens, a seeded random
    choice of them, in order (all ``n`` when ``keep >= n``)."""
    if keep >= n:
        return torch.arange(n)
    rows = math.ceil(n / row)
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    sizes = torch.clamp(n - order * row, max=row)  # the last row may be short
    count = int(torch.searchsorted(torch.cumsum(sizes, 0), keep)) + 1  # rows until ``keep`` tokens
    chosen = order[:count].sort().values
    idx = (chosen[:, None] * row + torch.arange(row)[None, :]).reshape(-1)
    return idx[idx < n][:keep]


def _study_fields() -> tuple[str, ...]:
    """The preset's fields the rows depend on: its SAE settings but the epochs (each row gives its own
    budget)."""
    from .saes import SAE_FIELDS

    return tuple(f for f in SAE_FIELDS if f != "sae_epochs")


def _saved_rows(study: ConvergenceStudy) -> list[dict[str, Any]]:
    """The rows on disk, when they were measured for this very study (else none)."""
    fields = _study_fields()
    path, spec = study.folder / ROWS_FILE, study.folder / STUDY_FILE
    if not (path.is_file() and spec.is_file()):
        return []
    try:
        saved = json.loads(spec.read_text())
        base = Experiment.from_dict(saved["experiment"])
        if base.differences(study.base, fields) or saved["site"] != study.site:
            return []
        return json.loads(path.read_text())["rows"]
    except (ConfigError, ValueError, KeyError, TypeError):
        return []


@writes("convergence", lambda a: a["study"].folder)
def run_convergence(study: ConvergenceStudy, progress: bool = True, subject=None) -> list[dict[str, Any]]:
    """Train and measure every budget of ``study`` not yet on disk; return all its rows."""
    from .models import load_subject
    from .training import training_data, train_sae

    exp = study.base
    rows = _saved_rows(study)
    subject = subject or load_subject(exp)
    data = training_data(subject, exp, [study.site], progress=progress)
    train_all, held = data.train(study.site), data.heldout(study.site)
    n = int(train_all.shape[0])
    done = {(r["axis"], round(r["samples_per_feature"], 6), r["tokens"]) for r in rows}
    atomic_write_json(study.folder / STUDY_FILE, {"study": study.to_dict(), "site": study.site,
                                                   "experiment": exp.to_dict()})
    for axis, spf, tokens in tqdm(study.budgets(n), desc="convergence budgets", unit="SAE", disable=not progress):
        same = [r for r in rows if round(r["samples_per_feature"], 6) == round(spf, 6) and r["tokens"] == tokens]
        if (axis, round(spf, 6), tokens) in done:
            continue
        if same:  # the run on all tokens at the preset's budget serves both axes
            rows.append(same[0] | {"axis": axis})
        else:
            if subject.spec.causal and data.clean is None:  # the clean model's loss: once for every budget
                from .splice import clean_loss

                data.clean = clean_loss(subject, data.ce_batches)
            rows.append(_measure(subject, exp, study.site, train_all, held, data, axis, spf, tokens, train_sae))
        done.add((axis, round(spf, 6), tokens))
        atomic_write_json(study.folder / ROWS_FILE, {"site": study.site, "train_tokens": n,
                                                     "shipped_samples_per_feature":
                                                         shipped_samples_per_feature(exp, n), "rows": rows})
    return rows


def _measure(subject, exp: Experiment, site: str, train_all, held, data, axis: str, spf: float, tokens: int,
             train_sae) -> dict[str, Any]:
    """Train one SAE of the study and measure it on the held-out tokens."""
    import tempfile

    from sae_lens import SAE

    t0 = time.perf_counter()
    train = train_all[token_subset(train_all.shape[0], tokens, exp.context_length, exp.seed)]
    samples = int(round(spf * exp.sae_width))
    sae = train_sae(train, exp, site, device=subject.device, progress=False, samples=samples)
    with tempfile.TemporaryDirectory() as tmp:  # the saved SAE reads raw activations (scales folded)
        sae.save_inference_model(tmp)
        saved = SAE.load_from_disk(tmp, device=str(subject.device))
    row: dict[str, Any] = {"axis": axis, "samples_per_feature": spf, "samples": samples, "tokens": int(train.shape[0]),
                           "epochs": samples / max(1, int(train.shape[0]))}
    row |= sae_quality(saved, held)
    if subject.spec.causal:
        from .splice import loss_recovered

        row |= loss_recovered(subject, {site: saved}, data.ce_batches, progress=False, clean=data.clean)[site]
    row["seconds"] = time.perf_counter() - t0
    log.info("%s budget %.0f samples/feature on %d tokens: %s", axis, spf, row["tokens"], row)
    return row


def axis_rows(rows: Sequence[dict[str, Any]], axis: str) -> list[dict[str, Any]]:
    """The rows of one axis, by increasing budget (samples per feature, or tokens)."""
    key = "samples_per_feature" if axis == "samples" else "tokens"
    return sorted((r for r in rows if r["axis"] == axis), key=lambda r: r[key])


#: a doubling of the budget that improves no quality by more than these is past the knee: FVU relative,
#: the dead share and the loss recovered in percentage points
KNEE_TOLERANCE = {"fvu": 0.10, "dead_fraction": 0.01, "loss_recovered": 1.0}


def knee(rows: Sequence[dict[str, Any]], axis: str, tolerance: dict[str, float] | None = None) -> dict[str, Any] | None:
    """The first row of ``axis`` whose next budget (a doubling) improves no quality by more than
    :data:`KNEE_TOLERANCE` (FVU by 10% of its value, the dead share by 1 point, the loss recovered by 1
    point), nor does any larger budget by more than twice that. None when every step still improves."""
    tol = KNEE_TOLERANCE | dict(tolerance or {})
    ordered = axis_rows(rows, axis)
    for i, row in enumerate(ordered[:-1]):
        if not _improves(row, ordered[i + 1], tol) and not any(
                _improves(row, later, {k: 2 * v for k, v in tol.items()}) for later in ordered[i + 2:]):
            return row
    return None


def _improves(row: dict[str, Any], other: dict[str, Any], tol: dict[str, float]) -> bool:
    """Whether ``other`` is better than ``row`` by more than ``tol`` on any quality."""
    for name, lower in QUALITIES.items():
        a, b = row.get(name), other.get(name)
        if a is None or b is None or any(isinstance(x, float) and math.isnan(x) for x in (a, b)):
            continue
        gain = (a - b) if lower else (b - a)
        limit = tol[name] * (abs(a) if name == "fvu" else 1.0)
        if gain > limit:
            return True
    return False


def load_convergence(exp: Experiment | str, site: str | None = None) -> dict[str, Any] | None:
    """The saved study of a preset (its middle site by default): ``{"site", "train_tokens",
    "shipped_samples_per_feature", "rows"}``; None when none is on disk."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    site = site or exp.sites[len(exp.sites) // 2]
    path = sae_dir(f"{exp.name}-convergence", site) / ROWS_FILE
    if not path.is_file():
        return None
    study = json.loads(path.read_text())
    # where the preset's SAEs sit now (its epochs may have changed since the rows were measured)
    study["shipped_samples_per_feature"] = shipped_samples_per_feature(exp, study["train_tokens"])
    return study


def convergence_findings(study: dict[str, Any] | None, command: str = "") -> str:
    """What the convergence figure says, read from the study's rows: per axis, each quality from the
    smallest to the largest budget, the knee, and where the shipped budget sits (past the knee,
    before it, or with no knee reached)."""
    if study is None:
        return ("No convergence study is on disk for this preset" + (f": run `{command}`." if command else "."))
    lines = []
    shipped = study["shipped_samples_per_feature"]
    for axis, unit in (("samples", "samples per feature"), ("tokens", "distinct training tokens")):
        ordered = axis_rows(study["rows"], axis)
        if not ordered:
            continue
        lo, hi = ordered[0], ordered[-1]
        key = "samples_per_feature" if axis == "samples" else "tokens"
        text = (f"From {lo[key]:,.0f} to {hi[key]:,.0f} {unit}: FVU {lo['fvu']:.3f} -> {hi['fvu']:.3f}, "
                f"dead {lo['dead_fraction']:.1%} -> {hi['dead_fraction']:.1%}")
        if "loss_recovered" in lo and "loss_recovered" in hi:
            text += f", loss recovered {lo['loss_recovered']:.1f}% -> {hi['loss_recovered']:.1f}%"
        at = knee(study["rows"], axis)
        if at is None:
            text += "; no knee: the largest budget still improves on every smaller one."
        else:
            text += f"; the knee is at {at[key]:,.0f} {unit}."
        lines.append(text)
        if axis == "samples":
            where = ("no knee is reached, so more training would still help" if at is None else
                     "past the knee" if shipped >= at["samples_per_feature"] else
                     f"before the knee ({at['samples_per_feature']:,.0f}): more training would still help")
            lines.append(f"The shipped SAEs train for {shipped:,.0f} samples per feature on {study['train_tokens']:,} "
                         f"tokens: {where}.")
    return "\n".join(lines)

"""A width sweep at one site: SAEs of several widths, each 4x the last, on the same activations.

Definitions (every row of :func:`width_rows`, measured on held-out tokens, as :func:`.saes.sae_quality`):

- ``fvu``: fraction of variance unexplained, ``sum |x - x_hat|^2 / sum |x - mean(x)|^2``;
- ``l0``: mean number of features active (> 0) per token;
- ``dead_fraction``: share of the width that never fires on the held-out tokens;
- ``dense_fraction``: share of the width firing on more than 10% of them;
- ``loss_recovered`` (causal LMs, %): ``100 (ce_zero - ce_spliced) / (ce_zero - ce_clean)``, the
  next-token loss with the site replaced by the SAE's reconstruction against zero-ablating it
  (:func:`.splice.loss_recovered`).

Training (:func:`train_width_sweep`): the site's activations are collected once (the base
experiment's ``sae_train_tokens`` and ``sae_heldout_tokens``) and every width is trained on the
same training tokens with the same **budget per feature**: ``tokens_per_feature x width`` training
samples (shuffled passes over the same tokens), so a 4x wider SAE sees 4x the samples. The default
budget is the base experiment's own, ``sae_train_tokens x sae_epochs / sae_width`` (Gemma preset:
300,000 x 2 / 2048 = 293 samples per feature), so the sweep's base-width SAE is trained as the
preset's are. The compute of one width grows as its samples times its width, i.e. as width^2.

Each width is written atomically to ``artefacts/saes/<base>-widths/<site>/w<width>/`` (sae_lens
format) with ``width.json`` (the sweep, the width's experiment, its samples and its row), and reused
when that record matches; the site folder holds ``sweep.json`` and ``widths_report.json`` (all rows).

The official route (:func:`official_width_rows`) measures the same rows for several widths of one
pretrained release at one layer (e.g. ``gemma-scope-2-270m-pt-res``: 16k, 64k, 256k and 1m).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..experiment import DEFAULT_EXPERIMENT, Experiment, get_experiment, width_site
from ..io import MORE_SPACE, atomic_dir, atomic_write_json, require_space, sae_dir
from ..locks import writes
from .saes import SAE_FIELDS, sae_quality
from .training import _first_tokens, collect_activations, store_weights_as, train_sae

log = logging.getLogger(__name__)

#: each width of a sweep is this many times the last
WIDTH_RATIO = 4
#: the fewest widths a trained sweep has
MIN_WIDTHS = 3
SWEEP_FILE = "sweep.json"
WIDTH_FILE = "width.json"
REPORT_FILE = "widths_report.json"
#: tokens of the sweep's statistics pass: the first of the base preset's stream (fewer if it has fewer)
WIDTH_PASS_TOKENS = 100_000


def _example(start: int, n: int = MIN_WIDTHS) -> str:
    return ",".join(str(start * WIDTH_RATIO**i) for i in range(n))


def check_widths(widths: Sequence[int], what: str = "widths", ratio: int | None = WIDTH_RATIO,
                 least: int = MIN_WIDTHS) -> None:
    """Refuse, in one line with the fix, widths that are too few, not increasing, or (given
    ``ratio``) not each ``ratio`` times the last."""
    widths = list(widths)
    start = min((w for w in widths if isinstance(w, int) and w > 0), default=512)
    fix = f"e.g. --widths {_example(start, max(least, 3))}"
    if any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in widths):
        raise ConfigError(f"{what} {widths} must be positive whole numbers of features: give {fix}")
    if len(widths) < least:
        raise ConfigError(f"{what} {widths}: a width sweep needs at least {least} widths"
                          f"{f', each {ratio}x the last' if ratio else ''}: give {fix}")
    for a, b in zip(widths, widths[1:]):
        if b <= a:
            raise ConfigError(f"{what} {widths} are not increasing ({b} after {a}): give them smallest first, {fix}")
        if ratio and b != ratio * a:
            raise ConfigError(f"{what} {widths}: {b} is not {ratio}x {a}: give each width {ratio}x the last, {fix}")


def parse_widths(text: str | None) -> tuple[int, ...] | None:
    """``"512,2048,8192"`` -> ``(512, 2048, 8192)``; ``k`` and ``m`` suffixes are 1024 and 2^20."""
    if text is None:
        return None
    units = {"k": 1024, "m": 1 << 20}
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        try:
            out.append(int(item[:-1]) * units[item[-1]] if item and item[-1] in units else int(item))
        except ValueError:
            raise ConfigError(f"--widths {text!r}: expected widths separated by commas, e.g. --widths "
                              f"{_example(512)}") from None
    return tuple(out)


@dataclass(frozen=True)
class WidthSweep:
    """SAEs of several widths at one site of ``base``, each width ``WIDTH_RATIO`` times the last.

    ``base``: an experiment or preset name (default: the default preset); ``site``: one of its
    model's sites (default: the middle site of ``base.sites``); ``widths``: at least 3, increasing,
    each 4x the last (default: the base width / 4, x1, x4); ``tokens_per_feature``: training samples
    per feature, the same for every width (default: the base's, ``sae_train_tokens x sae_epochs /
    sae_width``); ``ks``: TopK's k per width (default: the base's ``sae_k`` for all).
    """

    base: Experiment | str = DEFAULT_EXPERIMENT
    site: str | None = None
    widths: tuple[int, ...] = ()
    tokens_per_feature: float | None = None
    ks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        base = get_experiment(self.base) if isinstance(self.base, str) else self.base
        if not isinstance(base, Experiment):
            raise ConfigError(f"base={self.base!r} must be an experiment or a preset name")
        if base.sae_source != "trained":
            raise ConfigError(f"preset {base.name!r} uses pretrained SAEs ({base.sae_release}): a trained width "
                              "sweep needs a preset that trains its SAEs; for official widths use "
                              "`python -m helpers widths --release NAME --layers L`")
        set_("base", base)
        site = self.site if self.site is not None else base.sites[len(base.sites) // 2]
        if site not in base.model_spec.site_names():
            raise ConfigError(f"unknown site {site!r} for model {base.model!r}: choose one of the preset's sites "
                              f"{list(base.sites)} (--site)")
        set_("site", site)
        widths = tuple(self.widths) or (base.sae_width // WIDTH_RATIO, base.sae_width, base.sae_width * WIDTH_RATIO)
        check_widths(widths)
        set_("widths", widths)
        tpf = self.tokens_per_feature
        if tpf is None:
            tpf = base.sae_train_tokens * base.sae_epochs / base.sae_width
        if isinstance(tpf, bool) or not isinstance(tpf, (int, float)) or not tpf > 0:
            raise ConfigError(f"tokens_per_feature={tpf!r} must be a positive number of training samples per "
                              "feature")
        set_("tokens_per_feature", float(tpf))
        ks = tuple(self.ks) or (base.sae_k,) * len(widths)
        if len(ks) != len(widths):
            raise ConfigError(f"{len(ks)} values of k for {len(widths)} widths: give one k per width, or none "
                              f"(every width then takes the base's k={base.sae_k})")
        bad = [(k, w) for k, w in zip(ks, widths) if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= w]
        if bad:
            raise ConfigError(f"k={bad[0][0]!r} for width {bad[0][1]}: k must be a whole number in 1..width")
        set_("ks", ks)

    # ------------------------------------------------------------------ views
    @property
    def name(self) -> str:
        """The sweep's folder under ``artefacts/saes``: ``<base>-widths``."""
        return f"{self.base.name}-widths"

    @property
    def folder(self) -> Path:
        """``artefacts/saes/<base>-widths/<site>``."""
        return sae_dir(self.name, self.site)

    def width_folder(self, width: int) -> Path:
        return self.folder / f"w{width}"

    def experiment(self, width: int) -> Experiment:
        """The experiment that trains the SAE of ``width``: the base at the one site, that width and its k."""
        return self.base.replace(name=self.name, sites=(self.site,), sae_width=width,
                                 sae_k=self.ks[self.widths.index(width)])

    def pass_experiment(self, token_budget: int | None = WIDTH_PASS_TOKENS) -> Experiment:
        """The experiment of the sweep's statistics pass: one site per width (``<site>@w<width>``,
        :func:`~helpers.experiment.width_site`), so that consecutive widths are adjacent pairs of the
        pass, over the first ``token_budget`` tokens of the base's stream (at most the base's budget; None: the
        base's budget)."""
        base = self.base.token_budget
        budget = base if token_budget is None else token_budget if base is None else min(base, token_budget)
        return self.base.replace(name=self.name, sites=tuple(width_site(self.site, w) for w in self.widths),
                                 sae_width=max(self.widths), token_budget=budget,
                                 description=f"the width sweep of {self.base.name} at {self.site}: "
                                             f"{', '.join(map(str, self.widths))} features")

    def samples(self, width: int) -> int:
        """Training samples of ``width``: ``tokens_per_feature x width`` (rounded)."""
        return round(self.tokens_per_feature * width)

    def replace(self, **changes: Any) -> "WidthSweep":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "site": self.site, "widths": list(self.widths),
                "tokens_per_feature": self.tokens_per_feature, "ks": list(self.ks)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WidthSweep":
        return cls(base=Experiment.from_dict(data["base"]), site=data["site"], widths=tuple(data["widths"]),
                   tokens_per_feature=data["tokens_per_feature"], ks=tuple(data["ks"]))

    def save(self, folder: str | Path) -> Path:
        """Write ``sweep.json`` (atomically) into ``folder``."""
        return atomic_write_json(Path(folder) / SWEEP_FILE, self.to_dict())


def default_sweep_experiment(exp: Experiment) -> Experiment | None:
    """The pass experiment of ``exp``'s default width sweep (``<preset>-widths``), or None when ``exp``
    has none: its SAEs are pretrained, it is a width sweep's pass itself, or its width does not make a
    sweep (e.g. the base width /4 is below its k)."""
    if exp.sae_source != "trained" or exp.width_pairs:
        return None
    try:
        return WidthSweep(base=exp).pass_experiment()
    except ConfigError:
        return None


# --------------------------------------------------------------------------- rows
def quality_chunk(d_sae: int) -> int:
    """Tokens per chunk of :func:`sae_quality`: at most 2^24 feature activations at once (a 1m-wide
    SAE reads 16 tokens a chunk)."""
    return max(16, min(4096, (1 << 24) // d_sae))


def width_rows(saes: Mapping[int, Any], acts: torch.Tensor, subject=None, batches=None, site: str | None = None,
               progress: bool = False) -> list[dict[str, Any]]:
    """One row per width, smallest first: ``width``, ``d_sae`` and :func:`sae_quality` of its SAE on
    ``acts`` ``[n, d_in]``; with a causal ``subject``, token ``batches`` and the ``site``, also the loss
    recovered (``loss_recovered``, ``ce_clean``, ``ce_spliced``, ``ce_zero``)."""
    rows = []
    for width in sorted(saes):
        sae = saes[width]
        row: dict[str, Any] = {"width": int(width), "d_sae": int(sae.cfg.d_sae)}
        row.update(sae_quality(sae, acts, chunk=quality_chunk(sae.cfg.d_sae)))
        if subject is not None and subject.spec.causal and batches and site is not None:
            from .splice import loss_recovered

            row.update(loss_recovered(subject, {site: sae}, batches, progress=progress)[site])
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- training
@dataclass
class WidthSweepResult:
    sweep: WidthSweep
    rows: list[dict[str, Any]]
    #: widths read back from disk rather than trained
    reused: tuple[int, ...]
    seconds: float


def _saved_row(sweep: WidthSweep, width: int) -> dict[str, Any] | None:
    """The row saved with the SAE of ``width`` when it was trained exactly as the sweep asks, else None."""
    path = sweep.width_folder(width) / WIDTH_FILE
    if not path.is_file() or not (path.parent / "cfg.json").is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        diff = Experiment.from_dict(saved["experiment"]).differences(sweep.experiment(width), SAE_FIELDS)
    except (ConfigError, ValueError, KeyError, TypeError):
        return None
    if diff or saved.get("samples") != sweep.samples(width):
        log.info("width %d in %s was trained otherwise (%s): retraining", width, path.parent,
                 "; ".join(diff) or f"samples {saved.get('samples')} on disk, {sweep.samples(width)} asked for")
        return None
    return saved["row"]


@writes("widths", lambda a: a["sweep"].folder)
def train_width_sweep(sweep: WidthSweep, force: bool = False, progress: bool = True,
                      subject=None) -> WidthSweepResult:
    """Train (or reuse) one SAE per width of ``sweep`` at its site, all on the same activations
    (collected once, only when some width must be trained), and write the rows (see the module
    docstring). Each finished width stays on disk even if a later one fails."""
    t0 = time.perf_counter()
    rows: dict[int, dict[str, Any]] = {}
    if not force:
        for width in sweep.widths:
            row = _saved_row(sweep, width)
            if row is not None:
                rows[width] = row
    reused = tuple(w for w in sweep.widths if w in rows)
    todo = [w for w in sweep.widths if w not in rows]
    if reused:
        log.info("reusing widths %s in %s", list(reused), sweep.folder)
    if todo:
        from sae_lens import SAE

        from .models import load_subject

        first = sweep.experiment(todo[0])
        d = first.model_spec.d_model
        require_space(sweep.folder, sum((2 * d * w + w + d) * 4 for w in todo), "widths", MORE_SPACE)
        subject = subject or load_subject(first)
        total = first.sae_train_tokens + first.sae_heldout_tokens
        acts, tail = collect_activations(subject, first, total, progress=progress,
                                         keep_batches_from=first.sae_train_tokens)
        x = acts[sweep.site]
        n = x.shape[0]
        if n < total:
            log.warning("the corpus holds %d tokens, fewer than the %d asked for", n, total)
        n_heldout = min(first.sae_heldout_tokens, n // 5)
        train, heldout = x[: n - n_heldout], x[n - n_heldout :]
        tail = _first_tokens(tail, first.sae_ce_tokens)
        for width in tqdm(todo, desc="widths", unit="SAE", disable=not progress):
            exp = sweep.experiment(width)
            t1 = time.perf_counter()
            sae = train_sae(train, exp, sweep.site, device=subject.device, progress=progress,
                            samples=sweep.samples(width))
            with atomic_dir(sweep.width_folder(width), journal=False) as tmp:
                sae.save_inference_model(str(tmp))
                if exp.sae_save_dtype != "float32":
                    store_weights_as(tmp, exp.sae_save_dtype)
                saved = SAE.load_from_disk(str(tmp), device=str(subject.device))
                (row,) = width_rows({width: saved}, heldout, subject, tail, sweep.site, progress=progress)
                batch = min(exp.sae_train_batch, train.shape[0])
                steps = max(1, round(sweep.samples(width) / batch))
                row.update(k=exp.sae_k, train_tokens=int(train.shape[0]), train_samples=steps * batch,
                           samples_per_feature=steps * batch / width, seconds=time.perf_counter() - t1)
                atomic_write_json(tmp / WIDTH_FILE, {"sweep": sweep.to_dict(), "experiment": exp.to_dict(),
                                                     "samples": sweep.samples(width), "row": row})
            log.info("width %d: %s", width, row)
            rows[width] = row
    ordered = [rows[w] for w in sweep.widths]
    seconds = time.perf_counter() - t0
    sweep.save(sweep.folder)
    atomic_write_json(sweep.folder / REPORT_FILE, {"sweep": sweep.to_dict(), "rows": ordered,
                                                   "reused": list(reused), "seconds": seconds})
    return WidthSweepResult(sweep, ordered, reused, seconds)


def load_width_rows(sweep: WidthSweep) -> list[dict[str, Any]]:
    """The rows of a trained sweep, read from disk (MissingArtefactError naming the command if absent)."""
    from ..errors import MissingArtefactError

    rows = [_saved_row(sweep, w) for w in sweep.widths]
    missing = [w for w, r in zip(sweep.widths, rows) if r is None]
    if missing:
        raise MissingArtefactError(
            f"no SAE of width(s) {missing} trained for this sweep in {sweep.folder}: run `python -m helpers widths "
            f"--experiment {sweep.base.name} --site {sweep.site} --widths {','.join(map(str, sweep.widths))}`")
    return rows


# --------------------------------------------------------------------------- official releases
def _official_picks(release: str, layer: int, widths: Sequence[int] | None, l0: str | float | None):
    """``(site, widths, {width: registry entry}, l0)`` of several widths of ``release`` at ``layer``."""
    from .releases import get_release, pick_sae, _l0_error

    rel = get_release(release)
    here = [s for s in rel.saes if s.layer == layer]
    sites = sorted({s.site for s in here})
    if not sites:
        layers = sorted({s.layer for s in rel.saes})
        raise ConfigError(f"release {release!r} has no SAE at layer {layer}: its layers are {layers}")
    if len(sites) > 1:
        raise ConfigError(f"release {release!r} has SAEs at {sites} in layer {layer}: a width sweep reads one "
                          "site; use a release with one site per layer")
    site = sites[0]
    offered = sorted({s.width for s in here if s.width is not None})
    if len(offered) < 2:
        raise ConfigError(f"release {release!r} has only one width ({offered[0] if offered else 'unknown'}) at "
                          f"{site}: a width sweep needs a site with several widths, choose another release "
                          "or layer (`python -m helpers releases`)")
    chosen = tuple(widths) if widths else tuple(offered)
    absent = [w for w in chosen if w not in offered]
    if absent:
        raise ConfigError(f"release {release!r} has no SAE of width(s) {absent} at {site}: its widths there are "
                          f"{offered}")
    check_widths(chosen, ratio=None, least=2)
    picks = {}
    for w in chosen:
        candidates = [s for s in here if s.width == w]
        if l0 is None and w == chosen[0]:
            first = pick_sae(candidates)
            l0 = first.variant if first is not None and first.variant else None
        pick = pick_sae(candidates, l0)
        if pick is None:
            raise _l0_error(release, site, candidates, l0)
        picks[w] = pick
    return site, chosen, picks, l0


def official_width_experiment(release: str, layer: int, widths: Sequence[int] | None = None,
                              l0: str | float | None = None, graph_weights: bool = False,
                              **fields: Any) -> Experiment:
    """The statistics pass over several widths of one pretrained ``release`` at one ``layer`` (online):
    one width site per width (``<site>@w<width>``) with its SAE id, so that consecutive widths are the
    pass's pairs and :mod:`helpers.evolution.splitting_artefact` splits them, as for a trained sweep.
    E.g. ``gemma-scope-2-270m-pt-res`` at layer 5 with widths 16k and 262k: its pair is 16,384 x 262,144.
    ``graph_weights``: keep the within-site co-activation graph's weight sums (``F^2 / 2`` per site: 128
    GiB for a 262k-wide SAE in float32; off by default, its edges and counts are kept)."""
    from .releases import experiment_from_release

    site, chosen, picks, l0 = _official_picks(release, layer, widths, l0)
    exp = experiment_from_release(release, layers=(layer, layer), width=chosen[0], l0=l0, **fields)
    return exp.replace(name=f"{exp.name}-widths", sites=tuple(width_site(site, w) for w in chosen),
                       sae_ids=tuple(picks[w].sae_id for w in chosen), sae_width=max(chosen),
                       graph_weights=graph_weights)


def official_width_rows(release: str, layer: int, widths: Sequence[int] | None = None, l0: str | float | None = None,
                        subject=None, n_tokens: int | None = None, progress: bool = True,
                        **fields: Any) -> list[dict[str, Any]]:
    """The rows of :func:`width_rows` for several widths of one pretrained ``release`` at one ``layer``,
    on the same held-out activations (``n_tokens``, default the experiment's ``sae_heldout_tokens``).

    ``widths``: the release's widths there (default: all, at least 2, increasing); ``l0``: the L0
    variant, the same at every width (default: the variant :func:`.releases.pick_sae` picks at the
    smallest width, e.g. Gemma Scope 2's ``medium``); ``fields`` override the experiment (corpus, ...).
    Each SAE is loaded, measured and dropped in turn (a 1m-wide SAE on d_model 640 is 5 GiB).
    """
    from .saes import check_saes, load_pretrained_sae
    from .releases import experiment_from_release

    site, chosen, picks, l0 = _official_picks(release, layer, widths, l0)
    exp = experiment_from_release(release, layers=(layer, layer), width=chosen[0], l0=l0, **fields)
    exp = exp.replace(sites=(site,), sae_ids=(picks[chosen[0]].sae_id,))
    if subject is None:
        from .models import load_subject

        subject = load_subject(exp)
    n = n_tokens or exp.sae_heldout_tokens
    acts, batches = collect_activations(subject, exp, n, progress=progress, keep_batches_from=0)
    x, batches = acts[site], _first_tokens(batches, exp.sae_ce_tokens)
    rows = []
    for w in tqdm(chosen, desc="official widths", unit="SAE", disable=not progress):
        sae = load_pretrained_sae(release, picks[w].sae_id, subject.device)
        check_saes({site: sae}, subject.spec.d_model)
        (row,) = width_rows({w: sae}, x, subject, batches, site, progress=progress)
        row.update(release=release, sae_id=picks[w].sae_id, site=site)
        rows.append(row)
        del sae
    return rows


# --------------------------------------------------------------------------- text
def format_width_rows(rows: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """A text table: width, k, FVU, L0, dead %, dense %, loss recovered % (where measured), samples per feature."""
    cols = [("width", "width", "{:d}"), ("k", "k", "{:d}"), ("fvu", "FVU", "{:.3f}"), ("l0", "L0", "{:.1f}"),
            ("dead_fraction", "dead %", "{:.1%}"), ("dense_fraction", "dense %", "{:.1%}"),
            ("loss_recovered", "loss rec. %", "{:.1f}"), ("samples_per_feature", "samples/feature", "{:.0f}"),
            ("sae_id", "SAE id", "{}")]
    cols = [c for c in cols if any(c[0] in r for r in rows)]
    table = [[head for _, head, _ in cols]]
    for r in rows:
        table.append([fmt.format(r[key]).replace("%", "") if key in r else "-" for key, _, fmt in cols])
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in table]
    return "\n".join(([title] if title else []) + lines)

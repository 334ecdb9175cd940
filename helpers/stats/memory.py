"""The memory bill of the statistics pass, and the choice of accumulator dtypes that fits it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..errors import ConfigError
from ..experiment import Experiment
from .accumulators import COMPACT_EVERY, FLUSH_TOKENS, HIST_EDGES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """The dtypes of the big accumulators (pair and edge counts, sums of products)."""

    counts: torch.dtype = torch.int64
    sums: torch.dtype = torch.float64
    flush_tokens: int = FLUSH_TOKENS

    def describe(self, device: torch.device | str = "cpu") -> dict[str, str]:
        sums = "float64" if self.sums == torch.float64 else (
            f"float32 on {device}, flushed into float64 on the host every {self.flush_tokens:,} tokens")
        return {"pair_counts": _dtype_name(self.counts), "feature_counts": "int64",
                "edge_counts": "int64", "feature_sums": "float64", "product_sums": sums}


def _nbytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def group_sites(n_sites: int, groups: "list[list[int]]") -> list[tuple[list[int], list[int]]]:
    """``(encoded, owned)`` site indices of each group of consecutive pairs (:func:`pass_groups`).

    A group encodes the sites of its pairs (one group: every site); it owns those no earlier group
    encodes (each site has exactly one owner, the first group whose pairs include it), and holds
    their heavy per-site statistics (histograms, top examples, within-site co-activation graph).
    """
    if len(groups) <= 1:
        every = list(range(n_sites))
        return [(every, every)]
    out, first_free = [], 0
    for g in groups:
        encoded = list(range(g[0], g[-1] + 2))
        out.append((encoded, [s for s in encoded if s >= first_free]))
        first_free = encoded[-1] + 1
    return out


def _held(exp: Experiment, pairs_held: int | None) -> tuple[int, int, int]:
    """``(pairs, sites encoded, sites owned)`` of the biggest group holding ``pairs_held`` pairs:
    the first group of :func:`pass_groups` (the largest) encodes and owns ``pairs_held + 1`` sites."""
    s = len(exp.sites)
    if pairs_held is None:
        return len(exp.site_pairs), s, s
    return pairs_held, min(s, pairs_held + 1), min(s, pairs_held + 1)


def pair_cells(exp: Experiment, n_features: int) -> list[int]:
    """Feature pairs of each adjacent pair of sites: ``F x F``, or ``w_a x w_b`` for a width pair
    (two SAEs of one site, :attr:`~helpers.experiment.Experiment.site_widths`)."""
    if not exp.width_pairs:
        return [n_features * n_features] * len(exp.site_pairs)
    w = exp.site_widths
    return [w[i] * w[i + 1] for i in range(len(exp.site_pairs))]


def _held_cells(exp: Experiment, n_features: int, pairs: int) -> int:
    """Feature pairs of the biggest run of ``pairs`` consecutive adjacent pairs (what a group holds)."""
    cells = pair_cells(exp, n_features)
    return max((sum(cells[i:i + pairs]) for i in range(max(1, len(cells) - pairs + 1))), default=0)


def _widest(exp: Experiment, n_features: int, sites: int) -> int:
    """Features of the ``sites`` widest SAEs (``sites x F`` when every site has one width)."""
    widths = sorted(exp.site_widths if exp.width_pairs else [n_features] * len(exp.sites), reverse=True)
    return sum(widths[:sites])


def _edges(exp: Experiment, n_features: int, sites: int, max_tokens: int | None) -> int:
    """Distinct within-site edges of ``sites`` sites: measured at ~2% of the links made on the
    offline preset; budget 5%."""
    f = n_features
    links = exp.graph_top_k * (exp.graph_top_k - 1) // 2
    return min(sites * (f * (f - 1) // 2), int(0.05 * (max_tokens or 10**7) * sites * links))


def memory_bill(exp: Experiment, n_features: int, n_model_params: int, world: int = 1,
                precision: Precision | None = None, max_tokens: int | None = None,
                pairs_held: int | None = None) -> dict[str, int]:
    """Bytes the pass needs on its device, by item (the host: :func:`host_bill`).

    ``pairs_held``: the adjacent pairs of the device's group (pair-parallel: its rank; several
    passes: its largest pass); None: all of them (one process or data-parallel, whose ranks also
    need buffers to sum the counts at every step). A group of ``h`` pairs encodes ``h + 1``
    sites, whose SAEs, residuals and feature statistics it holds, and owns at most ``h + 1``
    (:func:`group_sites`: the first group owns all of its sites, a later one all but its first),
    whose histograms, top examples and within-site graph it holds.
    """
    precision = precision or Precision()
    f, k = n_features, exp.top_k_examples
    p, enc, own = _held(exp, pairs_held)
    d = exp.model_spec.d_model
    cb, sb = _nbytes(precision.counts), _nbytes(precision.sums)
    tokens = exp.batch_size * exp.context_length
    tri = f * (f - 1) // 2
    edges = _edges(exp, f, own, max_tokens)
    counts, sums = _dtype_name(precision.counts), _dtype_name(precision.sums)
    cells, widest = _held_cells(exp, f, p), max(pair_cells(exp, f), default=0)
    bill = {
        "model": n_model_params * (2 if exp.dtype in ("bfloat16", "float16") else 4),
        "saes": (2 * d + 1) * _widest(exp, f, enc) * 4 + enc * d * 4,
        # the encoded sites' residuals, one site's dense SAE pre-activations and codes, their sparse codes
        "batch (residuals, SAE codes)": tokens * (enc * d * 4 + 3 * f * 4 + enc * min(f, 256) * 12),
        "feature statistics": enc * f * (8 + 4 + 8 + 8),
        "activation histograms (int64, log bins)": own * f * (HIST_EDGES.numel() + 1) * 8,
        f"pair statistics ({counts} counts + {sums} sums)": cells * (cb + sb),
        f"co-activation graph ({sums} sums, upper triangle)": own * tri * sb if exp.graph_weights else 0,
        # edges: key + count; the link buffer: a key each, and a count each while it is merged
        "co-activation graph edge list (estimated)": edges * 16 * 2 + COMPACT_EVERY * 16,
        "top examples": own * f * k * 2 * (4 + 8 + 8),
        "step scratch (threshold comparisons)": widest,
    }
    if world > 1 and pairs_held is None:
        bill["step synchronisation buffers"] = widest * cb + enc * f * 8
    return bill


def host_items(exp: Experiment, n_features: int, precision: Precision, pairs_held: int | None = None,
               writer: bool = True, device_type: str = "cuda", max_tokens: int | None = None) -> dict[str, int]:
    """Host bytes of one process, by item.

    Every process: the float64 copies of its flushed float32 sums (its pairs, its owned sites'
    graph). The writer (the one process, or rank 0) also holds one pair's full results at a time
    (counts and float64 sums: the pair being spooled, :mod:`.spool`; on the CPU they are its
    accumulators, billed on the device) and its derived arrays (compact counts, at most as wide as
    the counts, and float32 r) until they are on disk: each pair is spooled as soon as its result
    is final (at the end of its pass, on rank 0 as it arrives, or pair by pair when writing), and
    the artefacts are written from the spool. Until they are written it also holds the per-site
    results (histograms and their compact copy, top examples, feature statistics, the edge list).
    The spool's disk: :func:`spool_bytes`.
    """
    s, f, k = len(exp.sites), n_features, exp.top_k_examples
    p, _, own = _held(exp, pairs_held)
    cb = _nbytes(precision.counts)
    flushed = precision.sums != torch.float64
    cells, widest = _held_cells(exp, f, p), max(pair_cells(exp, f), default=0)
    items = {}
    if flushed:
        graph = own * (f * (f - 1) // 2) if exp.graph_weights else 0
        items["float64 copies of the flushed float32 sums"] = (cells + graph) * 8
    if writer:
        full = 0 if device_type == "cpu" else widest * (cb + 8)
        items["one pair's results while spooled (counts + float64 sums, compact counts + float32 r)"] = (
            full + widest * (cb + 4))
        # _pearson32 works in blocks of 2048 rows: about 4 float64 temporaries of a block at once
        items["Pearson r blocks (float64 temporaries)"] = 4 * min(f, 2048) * f * 8
        items["per-site results until written"] = (
            s * f * ((HIST_EDGES.numel() + 1) * 8 * 2 + k * 2 * (4 + 8 + 8) + 4 * 8)
            + _edges(exp, f, s, max_tokens) * (2 + 4 + 4 + 8 + 8))
    return items


def spool_bytes(exp: Experiment, n_features: int, precision: Precision) -> int:
    """Disk the writer's spool needs at most (every pair's compact counts, at most as wide as the
    counts, and float32 r, uncompressed), in the output folder beside the artefacts, until written."""
    return sum(pair_cells(exp, n_features)) * (_nbytes(precision.counts) + 4)


def disk_bill(exp: Experiment, n_features: int, precision: Precision, max_tokens: int | None = None,
              pairs_held: int | None = None) -> dict[str, int]:
    """Bytes the pass writes into its output folder at most, by item; the recorded codes aside
    (:mod:`.codes`: they are not recorded when they would not fit).

    A checkpoint holds the pair statistics of the largest group (``pairs_held``; None: every
    pair) and at most every site's statistics (its own group's accumulators, the finished
    groups' results), the edge lists without their merge buffer; 1 MiB more for the curves,
    the experiment and the pickling."""
    held = memory_bill(exp, n_features, 0, 1, precision, max_tokens, pairs_held)
    every = memory_bill(exp, n_features, 0, 1, precision, max_tokens)
    pairs = next(v for k, v in held.items() if k.startswith("pair statistics"))
    sites = sum(v for k, v in every.items() if k not in _NOT_STATE and not k.startswith("pair statistics")
                and "edge list" not in k) + _edges(exp, n_features, len(exp.sites), max_tokens) * 16
    spool = spool_bytes(exp, n_features, precision)
    return {"checkpoint (the old one and the new one while it is replaced)": 2 * (pairs + sites + (1 << 20)),
            "pair spool (uncompressed)": spool,
            "artefacts (uncompressed)": spool + sites}


#: the items of :func:`memory_bill` that a checkpoint does not hold
_NOT_STATE = ("model", "saes", "batch (residuals, SAE codes)", "step scratch (threshold comparisons)")


def host_bill(exp: Experiment, n_features: int, precision: Precision, pairs_held: int | None = None,
              writer: bool = True, device_type: str = "cuda", max_tokens: int | None = None) -> int:
    """Host bytes of one process (the writer unless ``writer=False``): :func:`host_items` summed."""
    return sum(host_items(exp, n_features, precision, pairs_held, writer, device_type, max_tokens).values())


def available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62  # pragma: no cover - not Linux


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def plan_precision(exp: Experiment, n_features: int, n_model_params: int, device: torch.device,
                   world: int = 1, max_tokens: int | None = None,
                   available: int | None = None, host_available: int | None = None,
                   pairs_held: int | None = None, plan: str | None = None,
                   quiet: bool = False, ranks_per_host: int | None = None) -> tuple[Precision, dict[str, int]]:
    """Choose the accumulator dtypes and check the memory bill; refuse with a way out.

    ``plan``: the plan in words (:func:`describe_plan`), stated in the logged bill;
    ``quiet``: log nothing (an attempt among several). ``ranks_per_host``: the processes that
    share the host (default: one per GPU seen here, at most ``world``); the host must hold the
    writer's bill (:func:`host_items`) and the others'. On the CPU the device is the host: the
    device bill and this process's host bill share its memory.

    Counts are int32 when the stream is known to hold fewer than 2^31 tokens (exact).
    Sums follow ``exp.sum_dtype``; ``"auto"`` takes float64 when its bill fits the device
    and float32 flushed into float64 on the host otherwise (on a GPU only: on the CPU the
    host copy would sit in the same memory).
    """
    from .accumulators import count_dtype_for

    counts = count_dtype_for(max_tokens)
    avail = available_memory(device) if available is None else available
    host_avail = available_memory(torch.device("cpu")) if host_available is None else host_available
    cpu = device.type == "cpu"
    if cpu:
        avail //= world  # the ranks of one machine share its memory
    ranks = ranks_per_host or (1 if cpu else max(1, min(world, torch.cuda.device_count() or 1)))

    def bill_for(sums: torch.dtype) -> tuple[Precision, dict[str, int]]:
        prec = Precision(counts, sums, exp.flush_tokens)
        return prec, memory_bill(exp, n_features, n_model_params, world, prec, max_tokens, pairs_held)

    if exp.sum_dtype == "auto":
        prec, bill = bill_for(torch.float64)
        if sum(bill.values()) > 0.9 * avail and not cpu:
            prec, bill = bill_for(torch.float32)
            if not quiet:
                log.info("float64 sums do not fit %s: sums in float32, flushed into float64 on the host", device)
    else:
        prec, bill = bill_for(getattr(torch, exp.sum_dtype))
    hkw = dict(device_type=device.type, max_tokens=max_tokens)
    writer = host_items(exp, n_features, prec, pairs_held, **hkw)
    others = host_bill(exp, n_features, prec, pairs_held, writer=False, **hkw)
    host = sum(writer.values()) + (ranks - 1) * others
    if cpu:  # one memory: the device bill and the writer's host bill
        bill = {**bill, **{f"host: {k}": v for k, v in writer.items()}}
        host = 0
    total = sum(bill.values())
    lines = ", ".join(f"{k} {_gib(v)}" for k, v in bill.items())
    host_lines = ", ".join(f"{k} {_gib(v)}" for k, v in writer.items()) + (
        f"; {ranks - 1} other process(es) {_gib(others)} each" if ranks > 1 else "")
    if not quiet:
        log.info("memory bill on %s%s: %s (%s); available %s; host %s (%s)", device,
                 f" ({plan})" if plan else "", _gib(total), lines, _gib(avail), _gib(host), host_lines or "nothing")
    if total > 0.9 * avail:
        raise ConfigError(
            f"the pass needs {_gib(total)} on {device} ({lines}) but only {_gib(avail)} are free: "
            + ("on a GPU use --set sum_dtype=float32 (or auto); " if prec.sums == torch.float64 else "")
            + "lower --batch-size, use fewer sites or narrower SAEs, or run on a device with more memory"
        )
    if host > 0.9 * host_avail:
        raise ConfigError(
            f"the host needs {_gib(host)} ({host_lines}) but has only {_gib(host_avail)} free: "
            "use fewer sites or narrower SAEs, or a host with more memory"
        )
    return prec, bill


PLANS = ("auto", "data", "pairs", "passes")


class PlanChoice(NamedTuple):
    """How the pass runs: ``mode`` ``"data"`` (one process, or data-parallel), ``"pairs"``
    (pair-parallel under torchrun) or ``"passes"`` (one process, the adjacent pairs split over
    ``passes`` passes over the tokens); the accumulator dtypes; the number of passes over the tokens."""

    mode: str
    precision: Precision
    passes: int = 1


def pass_groups(n_pairs: int, passes: int) -> list[list[int]]:
    """The adjacent pairs held by each of ``passes`` passes: consecutive runs, as equal as can be
    (sizes differ by at most one), so that each pass reads as few sites as possible."""
    if not 1 <= passes <= max(1, n_pairs):
        raise ConfigError(f"--passes {passes}: the experiment has {n_pairs} adjacent pair(s); "
                          f"choose 1..{max(1, n_pairs)}")
    base, extra = divmod(n_pairs, passes)
    out, start = [], 0
    for j in range(passes):
        size = base + (j < extra)
        out.append(list(range(start, start + size)))
        start += size
    return out


def describe_plan(mode: str, n_pairs: int, world: int = 1, passes: int = 1) -> str:
    """The plan in words, as the memory bill and ``metadata.json`` state it, e.g.
    ``"3 passes over the pairs, 2 pairs each"``."""
    if mode == "passes":
        sizes = sorted({len(g) for g in pass_groups(n_pairs, passes)})
        each = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        unit = "pair" if sizes == [1] else "pairs"
        return f"{passes} pass{'es' if passes > 1 else ''} over the pairs, {each} {unit} each"
    if mode == "pairs":
        held = -(-n_pairs // world)
        return f"pair-parallel over {world} processes, at most {held} of the {n_pairs} pairs each"
    if world > 1:
        return f"data-parallel over {world} processes, all {n_pairs} pairs each"
    return f"one process, one pass, all {n_pairs} pairs"


def _too_many_processes(n_pairs: int) -> str:
    return (f"the pair-parallel plan gives each process at least one of the {n_pairs} adjacent pairs: "
            f"run at most {n_pairs} processes")


def check_plan_arguments(exp: Experiment, world: int, plan: str, passes: int | None) -> None:
    """Refuse, before anything heavy loads, a plan the processes cannot run."""
    if plan not in PLANS:
        raise ConfigError(f"unknown plan {plan!r}: choose one of {PLANS}")
    if plan == "pairs" and world == 1:
        raise ConfigError("the pair-parallel plan needs several processes: "
                          "torchrun --nproc-per-node K -m helpers collect --plan pairs ...")
    if passes is not None:
        if plan not in ("passes", "auto"):
            raise ConfigError(f"--passes {passes} goes with --plan passes (or auto), not --plan {plan}")
        pass_groups(len(exp.site_pairs), passes)  # in range
    n_pairs = len(exp.site_pairs)
    if plan == "pairs" and world > n_pairs:
        raise ConfigError(f"{_too_many_processes(n_pairs)} (--nproc-per-node), or --plan data")
    if world > 1 and (plan == "passes" or passes is not None):
        raise ConfigError("several passes over the pairs run in one process: under torchrun use "
                          "--plan pairs (each rank holds some of the pairs)")


def choose_plan(exp: Experiment, n_features: int, n_model_params: int, device: torch.device,
                world: int = 1, max_tokens: int | None = None, plan: str = "auto",
                available: int | None = None, host_available: int | None = None,
                passes: int | None = None) -> PlanChoice:
    """How the ranks share the work, and the accumulator dtypes (a :class:`PlanChoice`).

    One process, or data-parallel (every rank holds every pair) when that fits each device;
    otherwise, under torchrun, pair-parallel (rank r holds run r of at most ``ceil(P / K)``
    consecutive adjacent pairs, the sites they join and the per-site statistics of the sites
    it owns, and sees every token), and in one process, several passes over the tokens, each
    holding such a run (the fewest passes that fit, or ``passes``). The bill of a run is that
    of the first, the largest (:func:`memory_bill`).
    Refuses, with the ways out, what fits none.
    """
    check_plan_arguments(exp, world, plan, passes)
    kw = dict(max_tokens=max_tokens, available=available, host_available=host_available)
    n_pairs = len(exp.site_pairs)
    if passes is not None:  # forced: this many passes whatever fits
        held = max(len(g) for g in pass_groups(n_pairs, passes))
        precision, _ = plan_precision(exp, n_features, n_model_params, device, world, pairs_held=held,
                                      plan=describe_plan("passes", n_pairs, passes=passes), **kw)
        return PlanChoice("passes", precision, passes)
    if plan in ("auto", "data") or (plan == "passes" and n_pairs < 2):
        try:
            precision, _ = plan_precision(exp, n_features, n_model_params, device, world,
                                          plan=describe_plan("data", n_pairs, world), **kw)
            return PlanChoice("data", precision)
        except ConfigError as exc:
            if plan == "data" or n_pairs < 2:
                if world == 1 and n_pairs > 1:
                    raise ConfigError(f"{exc}; or hold the pairs in several passes (--plan passes) or on "
                                      "several devices: torchrun --nproc-per-node K -m helpers collect "
                                      "(pair-parallel)") from None
                raise
            first_error = exc
            log.info("all the pairs do not fit one device (%s): %s instead", exc,
                     "pair-parallel" if world > 1 else "several passes over the pairs")
    else:
        first_error = None
    if world > 1:
        if world > n_pairs:
            raise ConfigError(f"{first_error}; {_too_many_processes(n_pairs)}") from None
        held = -(-n_pairs // world)
        precision, _ = plan_precision(exp, n_features, n_model_params, device, world, pairs_held=held,
                                      plan=describe_plan("pairs", n_pairs, world), **kw)
        return PlanChoice("pairs", precision)
    # one process: the fewest passes whose pairs fit (2.. when all of them did not)
    tried: set[int] = set()
    last_error = first_error
    for n in range(1 if first_error is None else 2, n_pairs + 1):
        held = -(-n_pairs // n)
        if held in tried:
            continue
        tried.add(held)
        try:
            precision, _ = plan_precision(exp, n_features, n_model_params, device, world, pairs_held=held,
                                          plan=describe_plan("passes", n_pairs, passes=n), quiet=True, **kw)
        except ConfigError as exc:
            last_error = exc
            continue
        # state the bill of the plan it runs (the failed attempts stay quiet)
        plan_precision(exp, n_features, n_model_params, device, world, pairs_held=held,
                       plan=describe_plan("passes", n_pairs, passes=n), **kw)
        return PlanChoice("passes", precision, n)
    raise ConfigError(f"{last_error}; even one pair per pass does not fit: hold the pairs on several devices "
                      "(torchrun --nproc-per-node K -m helpers collect --plan pairs)") from None


@dataclass(frozen=True)
class Machine:
    """What a plan is made for: ``count`` devices of ``device_bytes`` each, ``host_bytes`` per node."""

    name: str
    count: int
    device_bytes: int
    host_bytes: int


def plan_for(exp: Experiment, n_features: int, n_model_params: int, machine: Machine,
             max_tokens: int | None = None) -> dict[str, object]:
    """The plan and per-device bill on ``machine`` (arithmetic only: nothing is allocated).

    Returns ``plan`` (one process / data-parallel / pair-parallel / "N passes over the pairs, M pairs
    each" on one device, as :func:`choose_plan` runs it / does not fit), the pairs each device
    holds, its bill, the host bill and the dtypes.
    """
    gpu = torch.device("cuda")
    p = len(exp.site_pairs)
    k = machine.count
    kw = dict(max_tokens=max_tokens, available=machine.device_bytes, host_available=machine.host_bytes,
              ranks_per_host=k)
    attempts = [("one process" if k == 1 else "data-parallel", None)]
    if 1 < k <= p:
        attempts.append(("pair-parallel", -(-p // k)))
    else:  # one device: the pairs in several passes over the tokens, as many as fit at once
        attempts += [(describe_plan("passes", p, passes=n), -(-p // n)) for n in range(2, p + 1)]
    seen: set = set()
    held = None
    for name, held in attempts:
        if held in seen:
            continue
        seen.add(held)
        try:
            prec, bill = plan_precision(exp, n_features, n_model_params, gpu, k, pairs_held=held, **kw)
        except ConfigError:
            continue
        return {"machine": machine.name, "plan": name, "pairs_per_device": held or p, "pairs": p,
                "device_bytes": sum(bill.values()), "bill": bill, **_host_figures(exp, n_features, prec, held, k,
                                                                                   max_tokens),
                "precision": prec.describe("GPU")}
    # nothing fits: the bill of the most spread plan, float32 sums, says what is too big
    from .accumulators import count_dtype_for

    prec = Precision(count_dtype_for(max_tokens), torch.float32, exp.flush_tokens)
    bill = memory_bill(exp, n_features, n_model_params, k, prec, max_tokens, held)
    return {"machine": machine.name, "plan": "does not fit", "pairs_per_device": held or p, "pairs": p,
            "device_bytes": sum(bill.values()), "bill": bill,
            **_host_figures(exp, n_features, prec, held, k, max_tokens),
            "precision": prec.describe("GPU")}


def _host_figures(exp: Experiment, n_features: int, prec: Precision, held: int | None, ranks: int,
                  max_tokens: int | None) -> dict[str, object]:
    """The writer's host bill (``host_bytes``, by item in ``host_items``) and the node's (``host_node_bytes``)."""
    writer = host_items(exp, n_features, prec, held, max_tokens=max_tokens)
    other = host_bill(exp, n_features, prec, held, writer=False, max_tokens=max_tokens)
    return {"host_bytes": sum(writer.values()), "host_items": writer,
            "host_node_bytes": sum(writer.values()) + (ranks - 1) * other,
            "spool_bytes": spool_bytes(exp, n_features, prec)}

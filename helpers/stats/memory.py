"""The memory bill of the statistics pass, and the choice of accumulator dtypes that fits it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


def memory_bill(exp: Experiment, n_features: int, n_model_params: int, world: int = 1,
                precision: Precision | None = None, max_tokens: int | None = None) -> dict[str, int]:
    """Bytes the pass needs on its device, by item (the host copy of flushed sums: :func:`host_bill`)."""
    precision = precision or Precision()
    s, f, p, k = len(exp.sites), n_features, len(exp.site_pairs), exp.top_k_examples
    d = exp.model_spec.d_model
    cb, sb = _nbytes(precision.counts), _nbytes(precision.sums)
    tokens = exp.batch_size * exp.context_length
    tri = f * (f - 1) // 2
    links = exp.graph_top_k * (exp.graph_top_k - 1) // 2
    # distinct edges: measured at ~2% of the links made on the offline preset; budget 5%
    edges = min(s * tri, int(0.05 * (max_tokens or 10**7) * s * links))
    counts, sums = _dtype_name(precision.counts), _dtype_name(precision.sums)
    bill = {
        "model": n_model_params * 4,
        "saes": s * (2 * d * f + f + d) * 4,
        # every site's residuals, one site's dense SAE pre-activations and codes, all sparse codes
        "batch (residuals, SAE codes)": tokens * (s * d * 4 + 3 * f * 4 + s * min(f, 256) * 12),
        "feature statistics": s * f * (8 + 4 + 8 + 8),
        "activation histograms (int64, log bins)": s * f * (HIST_EDGES.numel() + 1) * 8,
        f"pair statistics ({counts} counts + {sums} sums)": p * f * f * (cb + sb),
        f"co-activation graph ({sums} sums, upper triangle)": s * tri * sb,
        # edges: key + count; the link buffer: a key each, and a count each while it is merged
        "co-activation graph edge list (estimated)": edges * 16 * 2 + COMPACT_EVERY * 16,
        "top examples": s * f * k * 2 * (4 + 8 + 8),
        "step scratch (threshold comparisons)": f * f,
    }
    if world > 1:
        bill["step synchronisation buffers"] = f * f * cb + s * f * 8
    return bill


def host_bill(exp: Experiment, n_features: int, precision: Precision) -> int:
    """Host bytes of the float64 copies of flushed float32 sums (0 for float64 sums)."""
    if precision.sums == torch.float64:
        return 0
    s, f, p = len(exp.sites), n_features, len(exp.site_pairs)
    return (p * f * f + s * (f * (f - 1) // 2)) * 8


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
                   available: int | None = None, host_available: int | None = None) -> tuple[Precision, dict[str, int]]:
    """Choose the accumulator dtypes and check the memory bill; refuse with a way out.

    Counts are int32 when the stream is known to hold fewer than 2^31 tokens (exact).
    Sums follow ``exp.sum_dtype``; ``"auto"`` takes float64 when its bill fits the device
    and float32 flushed into float64 on the host otherwise (on a GPU only: on the CPU the
    host copy would sit in the same memory).
    """
    from .accumulators import count_dtype_for

    counts = count_dtype_for(max_tokens)
    avail = available_memory(device) if available is None else available
    host_avail = available_memory(torch.device("cpu")) if host_available is None else host_available
    if device.type == "cpu":
        avail //= world  # the ranks of one machine share its memory
    else:
        host_avail //= max(1, min(world, torch.cuda.device_count() or 1))

    def plan(sums: torch.dtype) -> tuple[Precision, dict[str, int]]:
        prec = Precision(counts, sums, exp.flush_tokens)
        return prec, memory_bill(exp, n_features, n_model_params, world, prec, max_tokens)

    if exp.sum_dtype == "auto":
        prec, bill = plan(torch.float64)
        if sum(bill.values()) > 0.9 * avail and device.type != "cpu":
            prec, bill = plan(torch.float32)
            log.info("float64 sums do not fit %s: sums in float32, flushed into float64 on the host", device)
    else:
        prec, bill = plan(getattr(torch, exp.sum_dtype))
    total = sum(bill.values())
    lines = ", ".join(f"{k} {_gib(v)}" for k, v in bill.items())
    host = host_bill(exp, n_features, prec)
    log.info("memory bill on %s: %s (%s); available %s; host copy of the sums %s",
             device, _gib(total), lines, _gib(avail), _gib(host))
    if total > 0.9 * avail:
        raise ConfigError(
            f"the pass needs {_gib(total)} on {device} ({lines}) but only {_gib(avail)} are free: "
            + ("on a GPU use --set sum_dtype=float32 (or auto); " if prec.sums == torch.float64 else "")
            + "lower --batch-size, use fewer sites or narrower SAEs, or run on a device with more memory"
        )
    if host > 0.9 * host_avail:
        raise ConfigError(
            f"the float64 host copy of the float32 sums needs {_gib(host)} but the host has only "
            f"{_gib(host_avail)} free: use fewer sites or narrower SAEs, or a host with more memory"
        )
    return prec, bill

"""The statistics pass: streaming accumulators, the one pass over the tokens, its memory plan,
its processes and its artefacts.

:mod:`.accumulators` (update / merge / state_dict / result; :mod:`.neuron_correlation`
features against neurons), :mod:`.collect` (the pass,
checkpoints, torchrun), :mod:`.memory` (the bill and the accumulator dtypes),
:mod:`.distributed` (ranks and collectives), :mod:`.artefacts` (atomic writes, safe loads).
"""

from .accumulators import (
    HIST_EDGES,
    ActivationHistogram,
    CoactivationGraph,
    FeatureStats,
    PairStats,
    SparseActs,
    StreamedSums,
    TopExamples,
    count_dtype_for,
    jaccard,
    pearson,
    sparsify,
)
from .artefacts import (
    ARTEFACT_FILES,
    METADATA,
    STAT_FIELDS,
    load_artefact,
    load_metadata,
    statistics_ready,
    write_artefacts,
)
from .neuron_correlation import NeuronCorrelation
from .collect import PassResult, PassState, encode_batch, run_pass
from .summaries import alive_pair_counts, dead_feature_rows, max_activation_rows, never_cofired_rows, top_entries
from .distributed import Dist
from .memory import (Machine, PlanChoice, Precision, available_memory, choose_plan, describe_plan, disk_bill,
                     group_sites, host_bill, host_items, memory_bill, pass_groups, plan_for, plan_precision,
                     spool_bytes)

__all__ = [
    "alive_pair_counts", "dead_feature_rows", "max_activation_rows", "never_cofired_rows", "top_entries",
    "NeuronCorrelation", "ARTEFACT_FILES", "ActivationHistogram", "HIST_EDGES", "CoactivationGraph", "Dist", "FeatureStats", "METADATA", "PairStats", "PassResult",
    "PassState", "Precision", "STAT_FIELDS", "SparseActs", "StreamedSums", "TopExamples", "available_memory",
    "count_dtype_for", "disk_bill", "encode_batch", "host_bill", "jaccard", "load_artefact", "load_metadata",
    "memory_bill", "pearson", "plan_precision", "choose_plan", "plan_for", "Machine", "PlanChoice", "describe_plan", "group_sites", "host_items", "pass_groups", "run_pass", "sparsify", "spool_bytes", "statistics_ready", "write_artefacts",
]

"""The corruption benchmark of Hendrycks & Dietterich (ICLR 2019), batched on any device.

All 19 corruptions (the 15 of the benchmark and 4 extra) as pure functions over float batches
(B, 3, H, W) in [0, 1] with an explicit `torch.Generator`, with the severity constants of the
authors' generation scripts for CIFAR (32 px), Tiny ImageNet (64 px) and ImageNet (224 px). One job
a module: `registry` (names, groups, tables), `cells` (one cell as the releases hold it),
`releases` (reading the official formats), `generate` (writing them), `evaluation` (what a trial
runs, `evaluate_corruptions`), `provision` (which set a study evaluates on). See docs/corruptions.md.

Public API
----------
corrupt(x, name, severity, *, generator=None, table=None, quantize=True) -> Tensor
CORRUPTIONS, GROUPS, BENCHMARK, EXTRA, SEVERITIES, TABLES, table_for_size(h, w), get_corruption
validate_corruptions(names), expand_corruptions(names), validate_severities(s), validate_table(t)
CorruptionSpec, SOURCES, evaluate_corruptions(model, test, spec, *, dataset, ...) -> (metrics, extras)
corruption_metric_names(corruptions, severities), summarize_cells(cells), cell_generator(...)
load_corrupted_cell(dataset, path, corruption, severity, ...), OfficialSetNotFoundError
GenerateRequest, generate_corrupted_set(request)   (CLI: python -m trainables.corruptions generate)
"""

from trainables.corruptions.registry import (
    BENCHMARK,
    CORRUPTIONS,
    EXTRA,
    GROUPS,
    SEVERITIES,
    TABLES,
    Corruption,
    corrupt,
    expand_corruptions,
    get_corruption,
    table_for_size,
    validate_corruptions,
    validate_severities,
    validate_table,
)
from trainables.corruptions.cells import cell_generator, corrupt_cell, jpeg_round_trip
from trainables.corruptions.evaluation import (
    SOURCES,
    CorruptionSpec,
    corruption_metric_names,
    evaluate_corruptions,
    summarize_cells,
)
from trainables.corruptions.generate import GenerateRequest, generate_corrupted_set
from trainables.corruptions.releases import OfficialSetNotFoundError, load_corrupted_cell
from trainables.corruptions.weather import FrostImagesNotFoundError

__all__ = [
    "BENCHMARK",
    "CORRUPTIONS",
    "EXTRA",
    "GROUPS",
    "SEVERITIES",
    "TABLES",
    "Corruption",
    "CorruptionSpec",
    "GenerateRequest",
    "OfficialSetNotFoundError",
    "SOURCES",
    "cell_generator",
    "corrupt_cell",
    "jpeg_round_trip",
    "corruption_metric_names",
    "evaluate_corruptions",
    "generate_corrupted_set",
    "load_corrupted_cell",
    "summarize_cells",
    "FrostImagesNotFoundError",
    "corrupt",
    "expand_corruptions",
    "get_corruption",
    "table_for_size",
    "validate_corruptions",
    "validate_severities",
    "validate_table",
]

"""The corruption benchmark as the trial logs it (METHOD.md section 4): the 15 corruptions in their
four groups, the severities, and the MLflow metric names built from them, from the contract
(contract/, standard library only), and the short names Table 1 gives them."""

from __future__ import annotations

from contract import (BENCHMARK, CLEAN_ERROR, CORRUPT_ERROR, GROUPS, SEVERITIES,  # noqa: F401
                      corruption_metric, group_metric, severity_metric)

CORRUPTION_GROUPS = GROUPS
CORRUPTIONS = BENCHMARK

# Short column headings for Table 1, as in the poster.
SHORT_NAMES: dict[str, str] = {
    "gaussian_noise": "gauss", "shot_noise": "shot", "impulse_noise": "impulse",
    "defocus_blur": "defocus", "glass_blur": "glass", "motion_blur": "motion", "zoom_blur": "zoom",
    "snow": "snow", "frost": "frost", "fog": "fog", "brightness": "bright",
    "contrast": "contrast", "elastic_transform": "elastic", "pixelate": "pixel",
    "jpeg_compression": "jpeg",
}

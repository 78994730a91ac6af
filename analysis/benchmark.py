"""The corruption benchmark as the trial logs it (METHOD.md section 4): the 15 corruptions in their
four groups, the severities, and the MLflow metric names built from them. Defined here rather than
imported from `trainables`, because analysis reads only what MLflow stored."""

from __future__ import annotations

CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS: tuple[str, ...] = tuple(c for group in CORRUPTION_GROUPS.values() for c in group)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# Short column headings for Table 1, as in the poster.
SHORT_NAMES: dict[str, str] = {
    "gaussian_noise": "gauss", "shot_noise": "shot", "impulse_noise": "impulse",
    "defocus_blur": "defocus", "glass_blur": "glass", "motion_blur": "motion", "zoom_blur": "zoom",
    "snow": "snow", "frost": "frost", "fog": "fog", "brightness": "bright",
    "contrast": "contrast", "elastic_transform": "elastic", "pixelate": "pixel",
    "jpeg_compression": "jpeg",
}

CLEAN_ERROR = "clean/error"
CORRUPT_ERROR = "corrupt/error"


def corruption_metric(corruption: str, metric: str = "error", severity: int | None = None) -> str:
    """`corrupt/<corruption>/<metric>` (mean over severities) or `corrupt/<corruption>/s<k>/<metric>`."""
    if severity is None:
        return f"corrupt/{corruption}/{metric}"
    return f"corrupt/{corruption}/s{severity}/{metric}"


def severity_metric(severity: int, metric: str = "error") -> str:
    """`corrupt/s<k>/<metric>`: the mean over the 15 corruptions at severity k."""
    return f"corrupt/s{severity}/{metric}"


def group_metric(group: str, metric: str = "error") -> str:
    return f"corrupt/group/{group}/{metric}"

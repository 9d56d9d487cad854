"""The papers' own network settings, measured here beside the speeds the papers report.

MeshPose (CVPR 2024) as released: HRNet-W32 on 288 x 384 crops (configs/experiment/paper_meshpose.yaml);
PyMAF (ICCV 2021): ResNet-50 on 224 x 224 crops (configs/experiment/paper_pymaf.yaml). A reported time
per image becomes GFLOP/s through our count of the network's FLOPs, and a fraction of the reporting
GPU's float32 peak (the vendor's figure: the papers name no measured peak).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PaperFigure:
    """A speed a paper reports: `ms` per image for `what`, on `hardware` of float32 peak `peak_tflops`.
    whole_network: the time covers the whole network (so that our FLOP count applies to it)."""

    what: str
    ms: float
    hardware: str
    peak_tflops: float
    whole_network: bool = True


@dataclass(frozen=True)
class PaperSetting:
    """One method under one configs/experiment, with what its paper reports (`missing`: why a paper's
    figures are not quoted)."""

    method: str
    experiment: str
    figures: tuple[PaperFigure, ...] = ()
    missing: str = ""


RTX_2080_TI_TFLOPS = 13.4  # float32, boost clock
PAPER_SETTINGS = (
    PaperSetting(
        "meshpose", "paper_meshpose",
        missing="MeshPose's Table 3 (FPS, model sizes) was not available to check when this bench was written",
    ),
    PaperSetting(
        "pymaf", "paper_pymaf",
        (
            PaperFigure("inference, 3 regression steps", 30.0, "RTX 2080 Ti", RTX_2080_TI_TFLOPS),
            PaperFigure("one mesh-aligned feedback step", 6.0, "RTX 2080 Ti", RTX_2080_TI_TFLOPS, False),
        ),
    ),
)


def figure_rate(figure: PaperFigure, gflops: float | None) -> tuple[float | None, float | None]:
    """(GFLOP/s, fraction of the hardware's float32 peak) a reported time implies for a network of
    `gflops` per image; (None, None) where the time is not the whole network's or gflops is unknown."""
    if not figure.whole_network or gflops is None:
        return None, None
    rate = gflops / (figure.ms * 1e-3)
    return rate, rate / (figure.peak_tflops * 1e3)


def figure_text(figure: PaperFigure, entry: Mapping | None) -> str:
    """'30 ms on RTX 2080 Ti (inference, ...): 251 GFLOP/s, 1.9% of its float32 peak' for a report."""
    rate, fraction = figure_rate(figure, None if entry is None else entry.get("gflops"))
    text = f"{figure.ms:g} ms on {figure.hardware} ({figure.what})"
    if rate is not None:
        text += f": {rate:,.0f} GFLOP/s, {100 * fraction:.1f}% of its float32 peak"
    return text

"""The comparison figure, in the manner of the MeshPose paper's Figure 2: accuracy against cost."""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping
from pathlib import Path

from densehmr.studies.common import wandb_unavailable

# (x key, x label, y key, y label) per panel; DensePose AP is the y of both, as in the paper.
PANELS = (
    ("latency_ms", "CPU latency, batch 1 (ms)", "densepose/gps_ap", "DensePose GPS AP (x100)"),
    ("mesh/pa_mpjpe", "PA-MPJPE (mm)", "densepose/gps_ap", "DensePose GPS AP (x100)"),
)
LABEL_OFFSETS = ((6, 6), (6, -14), (6, 18), (6, -26))
SECOND_DENSEPOSE = "vertexpose/"  # prefix of a method's second DensePose output, drawn as a diamond beside it


def compare_figure(methods: Mapping[str, Mapping]) -> bytes:
    """PNG bytes of `comparison_plot`."""
    fig = comparison_plot(methods)  # first: it selects matplotlib's file-only backend
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def comparison_plot(methods: Mapping[str, Mapping]):
    """A matplotlib Figure: one panel per PANELS entry, a labelled point per method that has both numbers,
    marker area by parameter count; error bars where seeds give a spread; a diamond at a method's second
    DensePose output (MeshPose's VertexPose) where it has one."""
    import matplotlib

    matplotlib.use("Agg")  # no display on the machines this runs on
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.5 * len(PANELS), 4.2))
    for ax, (xk, xlabel, yk, ylabel) in zip(axes, PANELS, strict=True):
        shown = 0
        for name, entry in methods.items():
            x, y = entry.get(xk), entry.get(yk)
            if x is None or y is None:
                continue  # e.g. DenseReg has no mesh, so no PA-MPJPE
            params_m = (entry.get("params") or 0) / 1e6
            xerr, yerr = entry.get(f"{xk}_std"), entry.get(f"{yk}_std")
            if xerr or yerr:
                ax.errorbar(x, 100 * y, xerr=xerr, yerr=None if yerr is None else 100 * yerr, fmt="none",
                            ecolor="0.6", elinewidth=1, capsize=2)
            points = ax.scatter([x], [100 * y], s=20 + 12 * params_m, alpha=0.7, edgecolors="k")
            label = f"{name} ({params_m:.1f}M)" if params_m else name
            # Staggered label offsets: methods that score alike (e.g. all 0 AP early on) stay readable.
            ax.annotate(label, (x, 100 * y), textcoords="offset points", xytext=LABEL_OFFSETS[shown % 4], fontsize=9)
            shown += 1
            second = entry.get(SECOND_DENSEPOSE + yk)  # MeshPose's VertexPose: the same network's other DensePose
            if second is not None:
                if spread := entry.get(f"{SECOND_DENSEPOSE}{yk}_std"):
                    ax.errorbar(x, 100 * second, yerr=100 * spread, fmt="none", ecolor="0.6", elinewidth=1, capsize=2)
                ax.scatter([x], [100 * second], s=40, marker="D", alpha=0.7, edgecolors="k",
                           color=points.get_facecolor()[0])
                ax.annotate(f"{name}, VertexPose", (x, 100 * second), textcoords="offset points",
                            xytext=LABEL_OFFSETS[shown % 4], fontsize=9)
                shown += 1
        if not shown:
            ax.text(0.5, 0.5, "no method has both numbers", ha="center", va="center", transform=ax.transAxes)
        ax.margins(x=0.2, y=0.2)  # room for the labels inside the panel, clear of its title
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    axes[0].set_title("accuracy vs speed (marker area ~ parameters)")
    axes[1].set_title("DensePose vs 3D accuracy")
    fig.tight_layout()
    return fig


def write_figure(path: Path, png: bytes) -> Path:
    from densehmr.files import atomic_write_bytes

    atomic_write_bytes(Path(path), png)
    return Path(path)


def log_to_wandb(path: Path, logger_cfg: Mapping, key: str = "compare") -> bool:
    """Send the figure to W&B when the study's logger is W&B and credentials exist; True when sent.
    Anything else (no logger, no credentials, no network) skips quietly: a figure upload never blocks
    or fails a study."""
    from densehmr.loggers import wandb_logger

    if logger_cfg.get("_target_") != f"{wandb_logger.__module__}.{wandb_logger.__name__}" or wandb_unavailable():
        return False
    try:
        import wandb

        started = wandb.run is None  # finish only a run this function started
        run = wandb.run or wandb.init(
            project=logger_cfg.get("project"), entity=logger_cfg.get("entity"), job_type=key, name=key,
            settings=wandb.Settings(init_timeout=30, silent=True),
        )
        run.log({key: wandb.Image(str(path))})
        if started:
            run.finish()
        return True
    except Exception as err:  # noqa: BLE001 - an upload failure must not lose the study's results
        print(f"note: W&B upload of {path} skipped: {type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
        return False

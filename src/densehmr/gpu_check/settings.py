"""What one gpu-check run does: the full check on a CUDA device, or the dry run on the CPU at tiny sizes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from densehmr.methods.registry import default_config_dir, method_names

# Paper settings are trained for this many steps; the check must finish within BUDGET_S on one GPU.
STEPS = 50
BUDGET_S = 8 * 60
# A run that has not finished its steps by then is stopped (Lightning's max_time) and reported.
METHOD_TIME_LIMIT = "00:00:02:30"


def paper_methods() -> tuple[str, ...]:
    """The configured methods that have a paper experiment (configs/experiment/paper_<method>.yaml), which
    the check trains, in the registry's order."""
    configs = default_config_dir()
    return tuple(m for m in method_names(configs) if (configs / "experiment" / f"paper_{m}.yaml").is_file())


@dataclass(frozen=True)
class CheckSettings:
    """device: where the GPU path runs (cuda; cpu for the dry run).  precision: Lightning's mixed
    precision.  overrides: Hydra overrides added to every method's paper experiment.
    train_images / val_images / image_px: the synthetic benchmark generated for the check.
    forward_batch: crops compared between CPU and device.  render_px: the renderer check's image side.
    timing_skip: first training steps left out of steps/s (cuDNN autotuning, allocator warm-up)."""

    device: str = "cuda"
    dry_run: bool = False
    methods: tuple[str, ...] = field(default_factory=paper_methods)
    steps: int = STEPS
    precision: str = "16-mixed"
    overrides: tuple[str, ...] = ()
    train_images: int = 64
    val_images: int = 16
    image_px: int = 256
    num_workers: int = 8
    forward_batch: int = 4
    render_px: int = 256
    render_repeats: int = 10
    timing_skip: int = 10
    budget_s: float = BUDGET_S


def full_check() -> CheckSettings:
    return CheckSettings()


def dry_run() -> CheckSettings:
    """Everything on the CPU at tiny sizes: the paper configs with 64 px crops, batch 2, 2 steps."""
    return replace(
        CheckSettings(),
        device="cpu", dry_run=True, steps=2, precision="bf16-mixed",
        overrides=("image_size=[64,64]", "method.batch_size=2", "trainer.accelerator=cpu"),
        train_images=4, val_images=2, image_px=128, num_workers=0, forward_batch=2, render_px=64,
        render_repeats=2, timing_skip=1,
    )

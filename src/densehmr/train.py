"""Train and evaluate one method: `python -m densehmr.train method=<m> [hydra overrides]`.

A run lands in `runs/<method>/<run-id>/` with `config.yaml`, `metrics.json`, `checkpoints/` and figures;
`runs/<method>/latest` points at the newest run.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from datamodules.errors import DataError
from densehmr.checkpoints import CheckpointError, newest_good_checkpoint
from densehmr.fault import NonFiniteLossError
from densehmr.run_record import RunRecord, report_truncation
from densehmr.runs import (
    ConfigError,
    build_datamodule,
    build_logger,
    build_method,
    build_trainer,
    intra_op_threads,
    point_latest,
    saved_run_config,
    write_metrics,
)

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns the final metrics (also in metrics.json, with the
    training's record: densehmr.run_record). With `resume=<run dir>`, that run continues from its newest
    good checkpoint under its own config."""
    if cfg.get("resume"):
        cfg = resumed_config(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.get("resume"):
        record_run_settings(cfg)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    point_latest(run_dir)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    model = build_method(cfg)
    logger = build_logger(cfg, run_dir)
    trainer = build_trainer(cfg, run_dir, logger)
    record = RunRecord(lambda fields: write_metrics(run_dir, model, {}, fields))
    trainer.callbacks.append(record)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    fields = record.record(trainer)
    metrics = dict(getattr(model, "last_metrics", {}))
    if cfg.test_after_fit:
        ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt or None)
        metrics.update(getattr(model, "last_metrics", {}))
    if trainer.is_global_zero:
        write_metrics(run_dir, model, metrics, fields)
        report_truncation(fields, cfg.trainer.get("max_time"), run_dir)
    return metrics


def record_run_settings(cfg: DictConfig) -> None:
    """Fix in `cfg` (before it is saved as config.yaml) what a resumed run must reuse: the intra-op thread
    count (the run's sums depend on it) and the logger's run id where it has one (W&B: its history continues
    in the same run)."""
    cfg.trainer_extra.threads = intra_op_threads(cfg)
    if cfg.get("logger") and "id" in cfg.logger and not cfg.logger.id:
        cfg.logger.id = secrets.token_hex(4)


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The config a run was started with (its config.yaml), pointed at its newest checkpoint that verifies
    (`last.ckpt`, else the newest kept one: said on stderr)."""
    run_dir = Path(cfg.resume)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"resume={run_dir}: no config.yaml in that run folder")
    resumed = saved_run_config(saved)
    if resumed.method.name != cfg.method.name:
        raise ConfigError(f"resume={run_dir} is a {resumed.method.name} run, not {cfg.method.name}")
    try:
        ckpt, passed_over = newest_good_checkpoint(run_dir / "checkpoints")
    except CheckpointError as err:
        raise CheckpointError(f"resume={run_dir}: {err}") from err
    for problem in passed_over:
        print(f"warning: {problem}; resuming from {ckpt} instead", file=sys.stderr)
    resumed.run_dir = str(run_dir)
    resumed.ckpt_path = str(ckpt)
    resumed.resume = str(run_dir)
    return resumed


def resume_overrides(argv: list[str]) -> list[str]:
    """Hydra's own output of a resumed run goes to that run's folder, not a new one."""
    resume = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if resume and resume[-1] not in ("", "null") and not any(a.startswith("run_dir=") for a in argv):
        return [*argv, f"run_dir={resume[-1]}"]
    return argv


def fail_clearly(fn, cfg: DictConfig) -> None:
    """Run `fn(cfg)`; a user error (config, data, missing file) ends in one `error:` line, exit 2."""
    try:
        fn(cfg)
    except InstantiationException as err:
        cause = err.__cause__ or err
        print(f"error: {type(cause).__name__}: {cause}".splitlines()[0], file=sys.stderr)
        sys.exit(2)
    except (CheckpointError, ConfigError, DataError, FileNotFoundError, NonFiniteLossError) as err:
        print(f"error: {err}".splitlines()[0], file=sys.stderr)
        sys.exit(2)


def check_config_groups(argv: list[str]) -> None:
    """Refuse `group=choice` overrides naming a config that does not exist, in one line (Hydra's own
    message spans a screen)."""
    for arg in argv:
        group, sep, value = arg.partition("=")
        folder = Path(CONFIG_DIR) / group.lstrip("+~")
        if not (sep and folder.is_dir()):
            continue
        for choice in value.split(","):  # `a,b` is a multirun sweep over both
            if choice not in ("null", "") and not (folder / f"{choice}.yaml").is_file():
                known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
                print(f"error: unknown {group.lstrip('+~')} {choice!r}; choose one of: {known}", file=sys.stderr)
                sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    fail_clearly(train, cfg)


if __name__ == "__main__":
    check_config_groups(sys.argv[1:])
    sys.argv[1:] = resume_overrides(sys.argv[1:])
    main()

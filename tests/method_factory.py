"""Methods built for tests as `make train` builds them: configs/train.yaml composed with `method=<name>`
(every option from configs/method/<name>.yaml, the shared settings from configs/train.yaml), a test's
changes on top, then `densehmr.runs.build_method`. A method class has no defaults of its own, so a test
cannot build a model the config would not."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from omegaconf import DictConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Unit tests start from random weights: the shipped pretrained backbone has tests of its own.
TEST_OVERRIDES = ("backbone.pretrained=none", "logger=none")


def method_config(name: str, *overrides: str) -> DictConfig:
    """configs/train.yaml with `method=<name>` and the Hydra overrides."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=[f"method={name}", *overrides])


def make_method(
    name: str,
    *overrides: str,
    image_size: tuple[int, int] = (64, 64),
    loss_weights: Mapping[str, float] | None = None,
    seed: int | None = 0,
    **options,
):
    """Method `name` from its config with TEST_OVERRIDES, the crop image_size, the Hydra overrides, its
    loss weights replaced by loss_weights (when given) and its options (`<name>.<key>`, each must exist)
    set to `options`; built after torch.manual_seed(seed) unless seed is None. The method's own error
    (not Hydra's wrapper) is raised."""
    from densehmr.runs import build_method

    cfg = method_config(name, *TEST_OVERRIDES, f"image_size=[{image_size[0]},{image_size[1]}]", *overrides)
    for key, value in options.items():
        cfg[name][key] = value  # a struct config: an unknown option raises
    if loss_weights is not None:
        cfg.method.module.loss_weights = dict(loss_weights)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        return build_method(cfg)
    except InstantiationException as err:
        raise err.__cause__ or err from None

"""The methods there are: one per config under configs/method/, which names its LightningModule by
`method.module._target_`. Train and evaluate pick one through Hydra's `method=` group; the commands
that list methods (demo, export, bench, compare, gpu-check) list them from here. So a new method is its
module plus its config (docs/architecture.md, "Adding a method").
"""

from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Where results tables put the four seed methods; any other configured method follows them, by name.
LEADING = ("meshpose", "pymaf", "dct", "densereg")


class MethodConfigError(ValueError):
    """A method config that cannot name its module; the message is one line naming the file and field."""


def default_config_dir() -> Path:
    """The repository's configs/ (read at call time: `densehmr.train.CONFIG_DIR`)."""
    from densehmr import train

    return Path(train.CONFIG_DIR)


def method_names(config_dir: str | Path | None = None) -> list[str]:
    """The configured methods (configs/method/<name>.yaml) in presentation order: LEADING first, then the
    rest alphabetically."""
    names = {path.stem for path in _method_folder(config_dir).glob("*.yaml")}
    return [m for m in LEADING if m in names] + sorted(names - set(LEADING))


def method_target(name: str, config_dir: str | Path | None = None) -> str:
    """The dotted path of the LightningModule class that configs/method/<name>.yaml instantiates."""
    path = _method_folder(config_dir) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(method_names(config_dir)) or "none"
        raise MethodConfigError(f"unknown method {name!r}: no {path}; configured: {known}")
    return _target(path)


def method_class(name: str, config_dir: str | Path | None = None) -> type:
    """The LightningModule class of method `name` (see `method_target`), imported."""
    module, _, attr = method_target(name, config_dir).rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _method_folder(config_dir: str | Path | None) -> Path:
    return Path(config_dir if config_dir is not None else default_config_dir()) / "method"


def _target(path: Path) -> str:
    """`method.module._target_` of one method config, checked against its file name, and its CPU step budget."""
    try:
        node = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError) as exc:
        raise MethodConfigError(f"{path}: unreadable YAML ({str(exc).splitlines()[0]})") from exc
    method = node.get("method") if OmegaConf.is_dict(node) else None
    if not OmegaConf.is_dict(method):
        raise MethodConfigError(f"{path}: no `method` node")
    if method.get("name") != path.stem:
        raise MethodConfigError(f"{path}: method.name is {method.get('name')!r}, not the file's name {path.stem!r}")
    module = method.get("module")
    target = module.get("_target_") if OmegaConf.is_dict(module) else None
    if not isinstance(target, str) or "." not in target:
        raise MethodConfigError(f"{path}: method.module._target_ must be a dotted class path, got {target!r}")
    steps = method.get("cpu_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MethodConfigError(f"{path}: method.cpu_steps must be a positive integer (the steps trainer=cpu trains "
                                f"the method for), got {steps!r}")
    return target

"""Each method's options are declared once, in configs/method/<name>.yaml: the classes have no defaults, the
module `make train` builds is the one the unit tests build (tests/method_factory.py), the user-facing
overrides reach the module, and a method needs no options node at all."""

from __future__ import annotations

import inspect

import pytest
import torch
from method_factory import CONFIGS, make_method, method_config
from omegaconf import OmegaConf, open_dict

from densehmr.methods.base import BaseMethod, Prediction
from densehmr.methods.registry import method_class, method_names
from densehmr.runs import ConfigError, build_datamodule, build_method, saved_run_config

# What runs.build_method gives every method besides its options node.
SHARED = {"body", "backbone", "image_size", "loss_weights", "optimizer", "scheduler", "log_images_every_n_steps",
          "densepose_kappa", "densepose_protocol"}


def _init_parameters(cls: type) -> list[inspect.Parameter]:
    """The named parameters of the __init__ of cls and of its bases down to BaseMethod."""
    params = []
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and issubclass(klass, BaseMethod):
            params += [p for p in inspect.signature(klass.__init__).parameters.values()
                       if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]
    return params


@pytest.mark.parametrize("name", method_names())
def test_every_option_is_the_configs_and_has_no_default_in_python(name):
    params = _init_parameters(method_class(name))
    assert [p.name for p in params if p.default is not inspect.Parameter.empty] == []
    options = set(OmegaConf.load(CONFIGS / "method" / f"{name}.yaml")[name])
    assert {p.name for p in params} - SHARED == options


@pytest.mark.parametrize("name", method_names())
def test_make_train_builds_the_module_the_unit_tests_build(name):
    cfg = method_config(name, "logger=none")  # what `make train METHOD=<name>` composes
    trained = dict(build_method(cfg).hparams)
    tested = dict(make_method(name, image_size=tuple(cfg.image_size)).hparams)
    # The one difference: unit tests start from random weights.
    assert tested.pop("backbone") == {**trained.pop("backbone"), "pretrained": "none"}
    assert tested == trained
    options = OmegaConf.to_container(cfg[name], resolve=True)
    assert {k: trained[k] for k in options} == options


@pytest.mark.parametrize(
    ("override", "option", "value"),
    [("meshpose.uv_decoding=closest", "uv_decoding", "closest"),
     ("densereg.regression=quantized", "regression", "quantized"),
     ("pymaf.aux_iuv=false", "aux_iuv", False), ("dct.dense_weight=0", "dense_weight", 0)],
)
def test_option_overrides_reach_the_module(override, option, value):
    name = override.split(".")[0]
    model = make_method(name, override, seed=None, **({"channels": 8, "hidden": 16} if name == "pymaf" else {}))
    assert model.hparams[option] == value


# What each paper trains with where the CPU default departs from it (configs/method/<name>.yaml says why):
# PyMAF's and DCT's as their papers and official trainers state them.
PAPER_SETTINGS = {
    "pymaf": {"pymaf.projection": "weak_perspective", "pymaf.aux_iuv": True, "optimizer.lr": 5e-5,
              "method.module.loss_weights.kp2d": 300.0, "method.module.loss_weights.kp3d": 300.0,
              "method.module.loss_weights.pose": 60.0, "method.module.loss_weights.betas": 0.06},
    "dct": {"dct.projection": "weak_perspective", "optimizer.lr": 1e-4, "method.module.loss_weights.kp2d": 10.0,
            "method.module.loss_weights.kp3d": 10.0, "method.module.loss_weights.pose": 10.0},
}


@pytest.mark.parametrize("name", sorted(PAPER_SETTINGS))
def test_the_paper_experiment_restores_what_the_cpu_default_changes(name):
    paper = method_config(name, f"experiment=paper_{name}")
    default = method_config(name)
    assert {k: OmegaConf.select(paper, k) for k in PAPER_SETTINGS[name]} == PAPER_SETTINGS[name]
    assert any(OmegaConf.select(default, k) != v for k, v in PAPER_SETTINGS[name].items())


def test_an_option_set_under_method_module_is_refused_in_one_line():
    cfg = method_config("meshpose", "image_size=[64,64]")
    with open_dict(cfg):
        cfg.method.module.uv_decoding = "closest"
    message = r"^method.module.uv_decoding: a meshpose option is set as meshpose.uv_decoding$"
    with pytest.raises(ConfigError, match=message):
        build_method(cfg)


class Bare(BaseMethod):
    """A method without options: a mask from one convolution."""

    name = "bare"

    def __init__(self, backbone, **base):
        super().__init__(**base)
        self.save_hyperparameters()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, image):
        return {"mask_logits": self.conv(image)[:, 0]}

    def loss_terms(self, out, batch, targets):
        return {}

    def predict(self, out, batch, targets=None):
        return Prediction(mask=(out["mask_logits"] > 0).float())


def test_a_method_without_an_options_node_builds():
    cfg = method_config("densereg", "image_size=[64,64]")
    cfg.method = {"name": "bare", "batch_size": 2, "lr": 1e-3,
                  "module": {"_target_": f"{__name__}.Bare", "loss_weights": {}}}
    model = build_method(cfg)
    assert isinstance(model, Bare) and model.hparams["densepose_kappa"] == cfg.densepose_kappa


def test_the_data_takes_the_runs_crop_batch_and_body():
    cfg = method_config("meshpose", "image_size=[96,64]", "method.batch_size=3")
    assert not {"image_size", "batch_size", "body"} & set(cfg.data)  # no second place for them
    data = build_datamodule(cfg)
    assert data.image_size == (96, 64) and data.batch_size == 3 and data.body_spec == {"name": "open"}


def test_a_run_saved_before_an_option_existed_builds_with_its_default(tmp_path, capsys):
    """Options added after a run was made (here meshpose.visibility_labels) take today's default, which is the
    behaviour before the option existed, so older runs still evaluate, resume and run the demo."""
    cfg = method_config("meshpose", "image_size=[64,64]")
    with open_dict(cfg):
        del cfg.meshpose["visibility_labels"]
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    run = saved_run_config(path)
    assert run.meshpose.visibility_labels == "partial" and run.meshpose.gain == cfg.meshpose.gain
    assert "predates meshpose.visibility_labels" in capsys.readouterr().err
    assert build_method(run).visibility_labels == "partial"

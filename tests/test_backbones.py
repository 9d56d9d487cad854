"""Backbones: output geometry, parameter counts against published figures, checkpoint loading."""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch
from torch import nn

from densehmr.nn.backbones import BACKBONES, build_backbone, load_backbone_weights
from densehmr.nn.backbones.resnet import Bottleneck, residual_stage

# torchvision's published parameter counts (model docs, "num_params"), classifier included.
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v2": 3_504_872,
}
CHANNELS = {
    "resnet18": [64, 128, 256, 512],
    "resnet34": [64, 128, 256, 512],
    "resnet50": [256, 512, 1024, 2048],
    "mobilenet_v3_large": [24, 40, 112, 960],
    "mobilenet_v2": [24, 32, 96, 1280],
    "hrnet_w32": [32, 64, 128, 256],
    "hrnet_w48": [48, 96, 192, 384],
}
# A few tensors of each torchvision model, named and shaped as in torchvision's state dicts.
TORCHVISION_KEYS = {
    "resnet18": {"conv1.weight": (64, 3, 7, 7), "layer2.0.downsample.0.weight": (128, 64, 1, 1),
                 "layer4.1.bn2.running_var": (512,), "fc.weight": (1000, 512)},
    "resnet34": {"layer3.5.conv2.weight": (256, 256, 3, 3), "layer4.2.bn2.num_batches_tracked": (),
                 "fc.bias": (1000,)},
    "resnet50": {"layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer1.0.conv3.weight": (256, 64, 1, 1),
                 "layer4.2.bn3.running_mean": (2048,), "fc.weight": (1000, 2048)},
    "mobilenet_v3_large": {"features.0.0.weight": (16, 3, 3, 3), "features.1.block.0.0.weight": (16, 1, 3, 3),
                           "features.4.block.2.fc1.weight": (24, 72, 1, 1),
                           "features.4.block.2.fc2.bias": (72,), "features.15.block.3.1.running_var": (160,),
                           "features.16.0.weight": (960, 160, 1, 1), "classifier.0.weight": (1280, 960),
                           "classifier.3.weight": (1000, 1280)},
    "mobilenet_v2": {"features.0.0.weight": (32, 3, 3, 3), "features.1.conv.0.0.weight": (32, 1, 3, 3),
                     "features.1.conv.1.weight": (16, 32, 1, 1), "features.2.conv.3.running_mean": (24,),
                     "features.18.0.weight": (1280, 320, 1, 1), "classifier.1.weight": (1000, 1280)},
}


@cache
def eval_model(name: str) -> nn.Module:
    return build_backbone(name).eval()


def _sizes() -> list[tuple[str, int]]:
    cases = [(name, size) for name in BACKBONES if name != "hrnet_w48" for size in (128, 224)]
    return cases + [("hrnet_w48", 64)]


@pytest.mark.parametrize(("name", "size"), _sizes())
def test_outputs_have_declared_channels_and_strides(name: str, size: int) -> None:
    model = eval_model(name)
    assert model.out_channels == CHANNELS[name]
    assert model.out_strides == [4, 8, 16, 32]
    with torch.no_grad():
        features = model(torch.randn(1, 3, size, size))
    assert [tuple(f.shape) for f in features] == [(1, c, size // s, size // s) for c, s in
                                                  zip(CHANNELS[name], [4, 8, 16, 32], strict=True)]
    assert all(torch.isfinite(f).all() for f in features)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large", "hrnet_w32"])
def test_odd_input_sizes_give_ceil_strides(name: str) -> None:
    with torch.no_grad():
        features = eval_model(name)(torch.randn(1, 3, 100, 76))
    assert [tuple(f.shape[-2:]) for f in features] == [
        (math.ceil(100 / s), math.ceil(76 / s)) for s in (4, 8, 16, 32)
    ]


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_and_names_match_torchvision(name: str) -> None:
    model = build_backbone(name, classifier=True)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]
    state = model.state_dict()
    for key, shape in TORCHVISION_KEYS[name].items():
        assert tuple(state[key].shape) == shape, key
    assert not any(key.startswith(model.head_prefixes) for key in build_backbone(name).state_dict())


def _hrnet_imagenet_head_params(widths: list[int]) -> int:
    """Parameters of HRNet-ImageNet's classification head (HRNet-Image-Classification's cls_hrnet):
    a Bottleneck per branch to 128/256/512/1024 ch, stride-2 3x3 convs (with bias) + BN merging them,
    1x1 conv (with bias) 1024 -> 2048 + BN, linear 2048 -> 1000."""
    head = [32, 64, 128, 256]
    modules = [residual_stage(Bottleneck, w, h, 1, stride=1) for w, h in zip(widths, head, strict=True)]
    modules += [nn.Sequential(nn.Conv2d(4 * a, 4 * b, 3, 2, 1), nn.BatchNorm2d(4 * b))
                for a, b in zip(head[:-1], head[1:], strict=True)]
    modules += [nn.Conv2d(1024, 2048, 1), nn.BatchNorm2d(2048), nn.Linear(2048, 1000)]
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize(("width", "imagenet_total", "pose_total_m"), [(32, 41_232_680, 28.5),
                                                                        (48, 77_469_864, 63.6)])
def test_hrnet_parameter_counts_match_official_figures(width: int, imagenet_total: int,
                                                       pose_total_m: float) -> None:
    """ImageNet layout + classification head: HRNet-W32-C / W48-C, 41.2M / 77.5M (exact counts as in
    osmr/imgclsmob's hrnetv2 tests). Pose layout + 1x1 conv to 17 joints: 28.5M / 63.6M (the
    deep-high-resolution-net.pytorch README, pose_hrnet_w32 / w48)."""
    imagenet = build_backbone(f"hrnet_w{width}")
    count = sum(p.numel() for p in imagenet.parameters())
    assert count + _hrnet_imagenet_head_params(imagenet.out_channels) == imagenet_total

    pose = build_backbone(f"hrnet_w{width}", pose_layout=True)
    pose_count = sum(p.numel() for p in pose.parameters()) + width * 17 + 17
    assert round(pose_count / 1e6, 1) == pose_total_m
    dropped = set(imagenet.state_dict()) - set(pose.state_dict())
    assert set(pose.state_dict()) < set(imagenet.state_dict())
    assert {key.split(".")[3] for key in dropped} == {"1", "2", "3"}
    assert all(key.startswith("stage4.2.fuse_layers.") for key in dropped)


def test_hrnet_pose_layout_outputs() -> None:
    model = build_backbone("hrnet_w32", pose_layout=True).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64))
    shapes = [(1, 32, 16, 16), (1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2)]
    assert [tuple(f.shape) for f in features] == shapes


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_parameter_gets_a_gradient(name: str) -> None:
    """No unused parameters: DDP runs without find_unused_parameters."""
    model = build_backbone(name)
    sum(f.mean() for f in model(torch.randn(2, 3, 64, 64))).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_norm_eval_keeps_running_statistics() -> None:
    model = build_backbone("resnet18", norm_eval=True).train()
    before = model.bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert not model.bn1.training and model.layer1[0].training is True
    assert torch.equal(model.bn1.running_mean, before)
    plain = build_backbone("resnet18").train()
    plain(torch.randn(2, 3, 64, 64))
    assert not torch.equal(plain.bn1.running_mean, torch.zeros(64))


def _randomized(model: nn.Module) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=generator).to(v.dtype) if v.is_floating_point() else v + 3
            for k, v in model.state_dict().items()}


def test_torchvision_file_round_trip(tmp_path) -> None:
    """A torchvision-layout file (with `fc`) loads into the headless backbone and the full one."""
    source = _randomized(build_backbone("resnet18", classifier=True))
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(source, path)

    headless = build_backbone("resnet18")
    assert load_backbone_weights(headless, path) == ["fc.bias", "fc.weight"]
    assert all(torch.equal(v, source[k]) for k, v in headless.state_dict().items())

    full = build_backbone("resnet18", weights=path, classifier=True)
    assert all(torch.equal(v, source[k]) for k, v in full.state_dict().items())
    full.load_state_dict(torch.load(path, weights_only=True), strict=True)


@pytest.mark.parametrize("wrap", ["module", "state_dict", "model_backbone"])
def test_wrapped_checkpoints_load(tmp_path, wrap: str) -> None:
    source = _randomized(build_backbone("mobilenet_v2", classifier=True))
    if wrap == "module":
        checkpoint = {f"module.{k}": v for k, v in source.items()}
    elif wrap == "state_dict":
        checkpoint = {"state_dict": source, "epoch": 3}
    else:
        checkpoint = {"model": {**{f"backbone.{k}": v for k, v in source.items()},
                                "head.final.weight": torch.zeros(3)}}
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    model = build_backbone("mobilenet_v2", weights=path)
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())


def test_missing_batch_counters_are_tolerated(tmp_path) -> None:
    source = {k: v for k, v in _randomized(build_backbone("resnet18")).items()
              if not k.endswith("num_batches_tracked")}
    torch.save(source, tmp_path / "old.pth")
    model = build_backbone("resnet18", weights=tmp_path / "old.pth")
    assert torch.equal(model.conv1.weight, source["conv1.weight"])


def test_mismatched_file_lists_keys(tmp_path) -> None:
    state = build_backbone("resnet34").state_dict()
    del state["layer3.2.conv1.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    state["layer1.0.bn1.weight"] = torch.zeros(65)
    path = tmp_path / "wrong_resnet.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        build_backbone("resnet34", weights=path)
    message = str(error.value)
    assert "wrong_resnet.pth" in message
    assert "missing keys (1): layer3.2.conv1.weight" in message
    assert "unexpected keys (1): layer5.0.conv1.weight" in message
    assert "layer1.0.bn1.weight file (65,) vs model (64,)" in message


def test_resnet_file_does_not_fit_hrnet(tmp_path) -> None:
    torch.save(build_backbone("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"r18\.pth.*missing keys \(\d+\): .*more\)"):
        load_backbone_weights(build_backbone("hrnet_w32"), tmp_path / "r18.pth")


def test_unknown_backbone_name() -> None:
    with pytest.raises(ValueError, match="resnet50"):
        build_backbone("resnet51")


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path) -> None:
    torch.save({"state_dict": {}, "meta": _Opaque()}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match=r"pickled\.pth.*state_dict"):
        build_backbone("resnet18", weights=tmp_path / "pickled.pth")


class _Opaque:
    """A non-tensor object, as training frameworks leave in checkpoint metadata."""


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v3_large", "mobilenet_v2", "hrnet_w32"])
def test_fewer_stages_load_full_checkpoints_and_drop_the_stride_32_level(name: str, tmp_path):
    torch.manual_seed(0)
    full = build_backbone(name).eval()
    torch.save(full.state_dict(), tmp_path / "full.pt")
    cut = build_backbone(name, weights=tmp_path / "full.pt", num_stages=3).eval()
    assert cut.out_channels == CHANNELS[name][:3] and cut.out_strides == [4, 8, 16]
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in full.parameters())
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        levels, full_levels = cut(image), full(image)
    expected = [(c, 64 // s, 64 // s) for c, s in zip(CHANNELS[name][:3], [4, 8, 16], strict=True)]
    assert [tuple(t.shape[1:]) for t in levels] == expected
    if not name.startswith("hrnet"):  # a chain: its first levels are the full network's (HRNet's are fused later)
        for got, want in zip(levels, full_levels[:3], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_a_backbone_refuses_stage_counts_it_cannot_build():
    with pytest.raises(ValueError, match="num_stages"):
        build_backbone("resnet18", num_stages=5)
    with pytest.raises(ValueError, match="classifier needs all 4 stages"):
        build_backbone("mobilenet_v3_large", num_stages=3, classifier=True)

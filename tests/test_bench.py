"""The bench: measurement helpers against hand-solved numbers, target logic, report format, and one
tiny end-to-end run (one method, one stage) checking bench.json's schema."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from torch import nn

from densehmr.bench import BenchSettings, run_bench
from densehmr.bench.methods import (
    MethodSettings,
    add_peak_fractions,
    add_ratios,
    available_methods,
    count_params,
    forward_gflops,
    measure_inference,
    median_ms,
    peak_memory_mb,
    run_isolated,
)
from densehmr.bench.papers import PaperFigure, PaperSetting, figure_rate
from densehmr.bench.report import METHOD_KEYS, REQUIRED_KEYS, render_markdown, write_json
from densehmr.bench.stages import StageSettings
from densehmr.bench.targets import Target, evaluate_targets, method_targets, stage_targets


def test_forward_gflops_of_a_convolution_is_hand_solved():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    image = torch.zeros(2, 3, 16, 16)
    # 2 flops per multiply-add, per output element Cin * k * k of them.
    assert forward_gflops(conv, image) == pytest.approx(2 * 3 * 8 * 9 * 16 * 16 / 1e9)


def test_forward_gflops_of_resnet18_matches_the_published_count():
    from densehmr.nn.backbones import build_backbone

    # torchvision's ResNet-18: 1.814 GMACs at 224x224, of which the classifier is 0.512 MMACs.
    gflops = forward_gflops(build_backbone("resnet18").eval(), torch.zeros(1, 3, 224, 224))
    assert gflops == pytest.approx(2 * (1.8142e9 - 0.512e6) / 1e9, rel=0.01)


def test_count_params_and_median_ms():
    assert count_params(nn.Linear(10, 3)) == 33
    ms = median_ms(lambda: time.sleep(0.02), repeats=3, warmup=0)
    assert 19.0 <= ms < 200.0


def _allocate_200mb() -> None:
    block = torch.ones(50_000_000)  # 200 MB, freed on return
    block += 1


def test_peak_memory_sees_a_transient_allocation():
    # In a fresh process: in a long-lived one the allocation may reuse pages already resident.
    mb = run_isolated(peak_memory_mb, _allocate_200mb)
    assert 180 <= mb < 400


def test_run_isolated_runs_in_another_process():
    assert run_isolated(os.getpid) != os.getpid()


def test_available_methods_puts_the_compared_ones_first(tmp_path):
    (tmp_path / "method").mkdir()
    for name in ("zeta", "densereg", "meshpose", "alpha"):
        (tmp_path / "method" / f"{name}.yaml").write_text("")
    assert available_methods(tmp_path) == ["meshpose", "densereg", "alpha", "zeta"]


def _entry(throughput: float, latency: float, params: int = 10, gflops: float = 2.0) -> dict:
    return {
        "params": params, "gflops": gflops, "latency_ms_bs1": latency, "throughput_bs32": throughput,
        "train_step_ms": 100.0, "peak_mem_mb": 50.0, "gflops_per_s": gflops * throughput, "device": "cpu",
        "train_batch": 16, "image_size": [128, 128], "gflops_per_s_max": 1.5 * gflops * throughput,
        "matmul_gflops": 120.0,
    }


def test_add_ratios_against_pymaf_at_the_same_backbone():
    methods = {
        "meshpose": {"resnet50": _entry(30.0, 20.0, params=5), "mobilenet_v3_large": _entry(40.0, 10.0)},
        "pymaf": {"resnet50": _entry(10.0, 50.0, params=20)},
    }
    add_ratios(methods)
    r50 = methods["meshpose"]["resnet50"]
    assert r50["throughput_vs_pymaf"] == pytest.approx(3.0)
    assert r50["speedup_bs1_vs_pymaf"] == pytest.approx(2.5)
    assert r50["params_vs_pymaf"] == pytest.approx(0.25)
    assert r50["peak_fraction"] == pytest.approx(1.5 * 2.0 * 30.0 / 120.0)
    assert "throughput_vs_pymaf" not in methods["meshpose"]["mobilenet_v3_large"]  # no PyMAF there
    assert "backbone_only_vs_pymaf" not in r50  # its backbone was not timed
    r50["backbone_throughput_bs32_max"] = 45.0
    methods["pymaf"]["resnet50"]["throughput_bs32_max"] = 15.0
    add_ratios(methods)
    assert r50["backbone_only_vs_pymaf"] == pytest.approx(3.0)  # against PyMAF's whole network
    assert methods["pymaf"]["resnet50"]["throughput_vs_pymaf"] == pytest.approx(1.0)


def test_bf16_peak_fraction_is_against_the_bf16_matmul():
    entry = {"gflops_per_s_max": 60.0, "matmul_gflops": 120.0, "gflops_per_s_bf16_max": 90.0,
             "matmul_gflops_bf16": 600.0}
    add_peak_fractions(entry)
    assert entry["peak_fraction"] == pytest.approx(0.5) and entry["peak_fraction_bf16"] == pytest.approx(0.15)
    without = {"gflops_per_s_max": 60.0, "matmul_gflops": 120.0}
    add_peak_fractions(without)
    assert "peak_fraction_bf16" not in without


def test_a_paper_time_becomes_a_rate_and_a_fraction_of_its_gpu_peak():
    whole = PaperFigure("inference", 30.0, "GPU", 13.4)
    rate, fraction = figure_rate(whole, 6.0)  # 6 GFLOPs in 30 ms
    assert rate == pytest.approx(200.0) and fraction == pytest.approx(200.0 / 13_400.0)
    assert figure_rate(PaperFigure("one step", 6.0, "GPU", 13.4, whole_network=False), 6.0) == (None, None)


class _SlowIn(nn.Module):
    """Sleeps 30 ms per call when its input is in `slow_format` (so that the other format is faster)."""

    def __init__(self, slow_format: torch.memory_format) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.slow_format = slow_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=self.slow_format) and not x.is_contiguous(
            memory_format=torch.contiguous_format if self.slow_format == torch.channels_last else torch.channels_last
        ):
            time.sleep(0.03)
        return self.conv(x)


@pytest.mark.parametrize("slow", ["contiguous", "channels_last"])
def test_measure_inference_keeps_the_faster_memory_format(slow: str):
    from densehmr.bench.methods import MEMORY_FORMATS

    settings = MethodSettings(warmup=0, latency_repeats=2, throughput_batch=2, throughput_repeats=2, matmul_size=64)
    out = measure_inference(_SlowIn(MEMORY_FORMATS[slow]), (4, 4), settings)
    faster = "channels_last" if slow == "contiguous" else "contiguous"
    assert out["memory_format"] == out["variant"] == faster and out["conv_bn_folded"] == 0
    assert out["throughput_by_variant"][faster] > 3 * out["throughput_by_variant"][slow]
    assert out["latency_ms_bs1"] < 30.0 <= out["throughput_batch"] * 1e3 / out["throughput_by_variant"][slow]


class _SlowHead(nn.Module):
    """A 1x1 conv `backbone` and a head that sleeps 30 ms per call."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.03)
        return self.backbone(x)


def test_measure_inference_times_the_backbone_alone():
    settings = MethodSettings(warmup=0, latency_repeats=1, throughput_batch=2, throughput_repeats=2,
                              matmul_size=64, memory_formats=("contiguous",), fold_bn=False, bf16=False)
    out = measure_inference(_SlowHead(), (4, 4), settings)
    assert out["throughput_bs32_max"] <= 2 / 0.03
    assert out["backbone_throughput_bs32_max"] > 10 * out["throughput_bs32_max"]
    assert "backbone_throughput_bs32_max" not in measure_inference(_SlowIn(torch.channels_last), (4, 4), settings)


def test_target_bounds_include_equality_and_unmeasured_is_none():
    at_least = Target("t", 10.0, True, "x")
    at_most = Target("t", 10.0, False, "ms")
    assert at_least.check(10.0)["pass"] and not at_least.check(9.99)["pass"]
    assert at_most.check(10.0)["pass"] and not at_most.check(10.01)["pass"]
    assert at_least.check(None)["pass"] is None


def test_method_targets():
    methods = {
        "meshpose": {"resnet50": _entry(30.0, 1.0), "mobilenet_v3_large": _entry(25.0, 1.0)},
        "pymaf": {"resnet50": _entry(20.0, 1.0)},
    }
    by_name = {t["name"]: t for t in method_targets(methods)}
    same = by_name["MeshPose / PyMAF throughput, resnet50"]
    assert same["value"] == pytest.approx(1.5) and same["pass"] is True
    xs = by_name["MeshPose-XS (mobilenet_v3_large) / PyMAF-R50 throughput"]
    assert xs["value"] == pytest.approx(1.25) and xs["pass"] is False
    methods["meshpose"]["resnet50"]["throughput_bs32_max"] = 40.0  # judged on the fastest repeats
    methods["pymaf"]["resnet50"]["throughput_bs32_max"] = 20.0
    methods["meshpose"]["resnet50"]["backbone_only_vs_pymaf"] = 2.25
    fastest = method_targets(methods)[0]
    assert fastest["value"] == pytest.approx(2.0) and "medians give 1.50" in fastest["note"]
    assert fastest["note"].endswith("its backbone alone: 2.25")
    unmeasured = method_targets({"meshpose": {"resnet18": _entry(1.0, 1.0)}})
    assert [t["pass"] for t in unmeasured] == [None, None]
    methods["meshpose_light"] = {"resnet50": _entry(36.0, 1.0), "mobilenet_v3_large": _entry(70.0, 1.0)}
    light = {t["name"]: t for t in method_targets(methods)}
    assert light["MeshPose light / PyMAF throughput, resnet50"]["value"] == pytest.approx(36.0 / 20.0)
    assert light["MeshPose-XS light (mobilenet_v3_large) / PyMAF-R50 throughput"]["pass"] is True  # 3.5x
    assert "MeshPose / PyMAF throughput, resnet50" in light  # the default's rows stay


def test_the_bench_measures_each_variant_with_every_backbone():
    from densehmr.bench import VARIANTS, Job, _jobs

    settings = BenchSettings(backbones=("resnet18", "mobilenet_v3_large"))
    jobs = _jobs(["meshpose", "pymaf"], settings)
    assert Job("pymaf", "pymaf", "resnet50") in jobs  # MeshPose-XS's reference
    (light,) = VARIANTS
    assert [j for j in jobs if j.name == light.name] == [
        Job(light.name, "meshpose", b, light.experiment) for b in ("resnet18", "mobilenet_v3_large")
    ]
    assert not any(j.experiment for j in _jobs(["pymaf"], settings))  # a variant of an unmeasured method


def test_stage_targets_judge_only_the_targets_settings():
    stages = {
        "hard_raster": {"value": 40.0, "unit": "ms / image", "size": 256},
        "soft_silhouette": {"value": 20.0, "unit": "ms", "size": 32, "batch": 2},  # a quick run's size
        "densepose_eval": {"value": 6.0, "unit": "s / 1000 instances", "points": 120},
        "datamodule": {"value": 150.0, "unit": "samples / s", "size": 128, "workers": 2},
    }
    by_stage = dict(zip(["hard", "soft", "gen", "dm", "dp"], stage_targets(stages), strict=True))
    assert by_stage["hard"]["pass"] is True
    assert by_stage["soft"]["pass"] is None and "other settings" in by_stage["soft"]["note"]
    assert by_stage["gen"]["pass"] is None
    assert by_stage["dm"]["pass"] is False
    assert by_stage["dp"]["value"] == pytest.approx(12.0) and by_stage["dp"]["pass"] is False


def _results() -> dict:
    methods = {"meshpose": {"resnet50": _entry(30.0, 20.0)}, "pymaf": {"resnet50": _entry(10.0, 50.0)}}
    add_ratios(methods)
    stages = {"hard_raster": {"value": 60.0, "unit": "ms / image", "size": 256}}
    return {
        "quick": True, "date": "2026-01-01T00:00:00", "wall_s": 12.0,
        "device": {"cpu": "Test CPU", "cores": 2, "threads": 2, "torch": "2.13", "cuda": None,
                   "load_start": [3.5, 2.0, 1.0], "load_end": [4.25, 2.0, 1.0]},
        "settings": {"method": {"matmul_size": 1024}}, "matmul_gflops": {"cpu": 100.0},
        "methods": methods, "stages": stages, "targets": evaluate_targets(methods, stages),
        "notes": ["dct: no configs/method/dct.yaml, skipped"],
    }


def test_markdown_report_has_machine_load_and_every_table():
    text = render_markdown(_results())
    assert "Test CPU" in text and "3.50 / 2.00 / 1.00" in text and "4.25 / 2.00 / 1.00" in text
    assert "noisy" in text
    assert "| meshpose | resnet50 |" in text and "| 3.00 |" in text  # 30 / 10 img/s
    assert "| hard_raster | 60.00 | ms / image |" in text
    assert "**FAIL**" in text and "not measured" in text
    assert "- dct: no configs/method/dct.yaml, skipped" in text
    assert "## Host memory" not in text  # nothing was measured both ways
    assert "throughput option" not in text  # no MeshPose light rows to explain
    results = _results()
    results["methods"]["meshpose_light"] = {"resnet50": _entry(40.0, 10.0)}
    results["targets"] = evaluate_targets(results["methods"], results["stages"])
    assert "MeshPose light rows the throughput option" in render_markdown(results)


def test_markdown_report_compares_host_memory_where_measured_both_ways():
    results = _results()
    entry = results["methods"]["meshpose"]["resnet50"]
    entry["throughput_bs32_max"] = 36.0
    entry["glibc_default"] = {"throughput_bs32": 24.0, "throughput_bs32_max": 30.0, "latency_ms_bs1": 25.0,
                              "train_step_ms": 125.0, "peak_mem_mb": 40.0}
    text = render_markdown(results)
    assert "## Host memory" in text
    assert "| meshpose | resnet50 | 24.0 -> 30.0 | 1.20 | 125.0 -> 100.0 | 1.25 | 40 -> 50 |" in text


def test_json_report_round_trips_and_requires_the_schema(tmp_path):
    results = _results()
    path = write_json(results, tmp_path / "bench.json")
    assert json.loads(path.read_text())["methods"]["pymaf"]["resnet50"]["throughput_bs32"] == 10.0
    del results["stages"]
    with pytest.raises(KeyError):
        write_json(results, tmp_path / "broken.json")


def test_a_tiny_quick_run_writes_the_schema(tmp_path):
    """One method and one stage at tiny sizes (in this process: `make bench` runs each method in its own,
    through run_isolated, tested above)."""
    settings = BenchSettings(
        quick=True, methods=("densereg", "nosuchmethod"), backbones=("resnet18",), stages=("soft_silhouette",),
        method=MethodSettings(
            warmup=1, latency_repeats=1, throughput_batch=2, throughput_repeats=1, train_repeats=1,
            image_size=(64, 64), train_batch=2, matmul_size=128,
        ),
        stage=StageSettings(repeats=1, soft_batch=2, soft_size=32, generation_size=64),
        cuda=False, batch_images=2, isolate=False,
        papers=(PaperSetting("pymaf", "paper_pymaf", (PaperFigure("all", 50.0, "GPU", 10.0),)),),
        paper_batch=1,
    )
    results = run_bench(settings, tmp_path, log=lambda _: None)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert set(REQUIRED_KEYS) <= set(saved)
    entry = saved["methods"]["densereg"]["resnet18"]
    assert set(METHOD_KEYS) <= set(entry)
    assert entry["params"] > 11_176_512  # more than its ResNet-18 trunk (torchvision's, without fc)
    assert entry["gflops"] > 2 * (1.8142e9 - 0.512e6) / 1e9 * (64 / 224) ** 2  # and more than its FLOPs
    assert entry["latency_ms_bs1"] > 0 and entry["throughput_bs32"] > 0 and entry["peak_mem_mb"] > 0
    assert entry["image_size"] == [64, 64] and entry["train_batch"] == 2
    assert set(saved["stages"]["soft_silhouette"]) >= {"value", "unit"}
    assert all(set(t) >= {"name", "value", "target", "pass"} for t in saved["targets"])
    assert any("nosuchmethod" in n for n in saved["notes"])
    (paper,) = saved["papers"]
    assert paper["image_size"] == [224, 224] and paper["backbone"] == "resnet50"  # the experiment's own
    assert paper["throughput_batch"] == 1 and paper["gflops"] > entry["gflops"]
    text = (tmp_path / "bench.md").read_text()
    assert text.startswith("# Benchmarks")
    rate = paper["gflops"] / 0.05
    assert f"50 ms on GPU (all): {rate:,.0f} GFLOP/s, {rate / 100:.1f}% of its float32 peak" in text
    assert results["device"]["load_end"]


def _relu_onnx(path) -> None:
    """A one-node ONNX model (Relu) with a symbolic batch and spatial size."""
    from onnx import TensorProto, helper, save

    shape = ["batch", 3, "height", "width"]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["image"], ["out"])], "relu",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime reads (onnx may write a newer one)
    save(model, str(path))


def test_onnx_stage_times_every_export_found_and_notes_none(tmp_path):
    from densehmr.bench.stages import run_stages

    settings = StageSettings(repeats=2, onnx_image_size=(8, 8))
    notes: list[str] = []
    found = run_stages(None, settings, tmp_path, ["onnx"], onnx_roots=[tmp_path / "runs"], notes=notes, log=print)
    assert found == {}
    assert notes and "no exported model" in notes[0]

    (tmp_path / "runs" / "m").mkdir(parents=True)
    _relu_onnx(tmp_path / "runs" / "m" / "model.onnx")
    stages = run_stages(None, settings, tmp_path, ["onnx"], onnx_roots=[tmp_path / "runs"], log=print)
    (name, record), = stages.items()
    assert name.endswith("model.onnx") and record["input"] == [1, 3, 8, 8] and record["value"] > 0


def test_a_failing_stage_is_noted_and_the_others_still_run(tmp_path, monkeypatch):
    from densehmr.bench import stages as stages_module

    def broken(settings):
        raise RuntimeError("renderer exploded\nwith a traceback")

    monkeypatch.setattr(stages_module, "hard_raster", broken)
    settings = StageSettings(repeats=1, soft_batch=1, soft_size=16)
    notes: list[str] = []
    out = stages_module.run_stages(
        None, settings, tmp_path, ["hard_raster", "soft_silhouette"], notes=notes, log=lambda _: None
    )
    assert list(out) == ["soft_silhouette"]
    assert notes == ["hard_raster: failed, RuntimeError: renderer exploded"]

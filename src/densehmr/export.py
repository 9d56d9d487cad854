"""ONNX export of a method's inference graph, checked against PyTorch with onnxruntime:
`python -m densehmr.export --method m [--ckpt PATH | --run DIR | --untrained] [--out DIR]`.

The graph is the method's `forward`: image (B, 3, H, W) ImageNet-normalized -> every tensor it returns
(MeshPose: the vertex heatmaps, their 2D soft-argmax, the regression branch and the fused vertices,
the mask; HMR methods: the body parameters and the posed mesh; DenseReg: its IUV maps), standard ONNX
operators only (opset 17), dynamic batch. It is checked on random inputs and on person crops of the
images in tests/data (max abs difference per output), and timed at batch 1 against PyTorch (median of
repeats, same thread count). Results go to results/export.json and the table results/export.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from densehmr.bench.methods import median_ms
from densehmr.inference import ModelError, crop_person, load_method, read_image
from densehmr.methods.base import BaseMethod
from densehmr.methods.registry import method_names

OPSET = 17
ROOT = Path(__file__).resolve().parents[2]
REAL_IMAGES = ROOT / "tests" / "data"
STANDARD_DOMAINS = ("", "ai.onnx")


class InferenceGraph(nn.Module):
    """A method's forward as a function of the image alone, returning its tensors in a fixed order."""

    def __init__(self, model: BaseMethod, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        out = self.model(image)
        return tuple(out[name] for name in self.outputs)


def input_channels(model: BaseMethod) -> int:
    """3, or 6 for DCT with its IUV input branch (image and encoded IUV stacked)."""
    return 6 if getattr(model, "iuv_input", False) else 3


def tensor_outputs(model: BaseMethod, image: Tensor) -> tuple[str, ...]:
    """Names of the tensors `model(image)` returns at its top level, sorted."""
    with torch.no_grad():
        out = model(image)
    return tuple(sorted(k for k, v in out.items() if isinstance(v, Tensor)))


def export_onnx(model: BaseMethod, path: Path) -> tuple[InferenceGraph, list[str]]:
    """Write the ONNX graph of `model` (eval mode) to `path`; returns the graph and the ONNX operator types."""
    import onnx

    model = model.eval()
    h, w = model.image_size
    example = torch.randn(1, input_channels(model), h, w, device=next(model.parameters()).device)
    names = tensor_outputs(model, example)
    graph = InferenceGraph(model, names).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {name: {0: "batch"} for name in ("image", *names)}
    with warnings.catch_warnings():
        # The tracer notes shapes it freezes (the crop size, fixed by design); the graph is checked
        # numerically at several batch sizes instead.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        torch.onnx.export(
            graph, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=["image"],
            output_names=list(names), dynamic_axes=dynamic, do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    custom = sorted({n.domain for n in proto.graph.node if n.domain not in STANDARD_DOMAINS})
    if custom:
        raise RuntimeError(f"{path}: custom operator domains {custom}")
    return graph, sorted({n.op_type for n in proto.graph.node})


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def differences(graph: InferenceGraph, sess, image: Tensor) -> dict[str, tuple[float, float]]:
    """Per output on `image` (B, C, H, W): max |onnxruntime - PyTorch| and that divided by max |PyTorch|."""
    with torch.no_grad():
        expected = graph(image)
    got = sess.run(None, {"image": image.cpu().numpy()})
    out = {}
    for name, ref, value in zip(graph.outputs, expected, got, strict=True):
        ref = ref.detach().cpu().numpy()
        diff = float(np.abs(ref - value).max(initial=0.0))
        out[name] = (diff, diff / max(float(np.abs(ref).max(initial=0.0)), 1e-12))
    return out


def real_inputs(model: BaseMethod, folder: Path = REAL_IMAGES) -> Tensor | None:
    """Person crops (N, C, H, W) of the images in `folder` (their boxes from boxes.json where given)."""
    boxes_file = folder / "boxes.json"
    boxes = json.loads(boxes_file.read_text()) if boxes_file.is_file() else {}
    crops = []
    for path in sorted(folder.glob("*")):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        box = np.asarray(boxes[path.name], dtype=np.float64) if path.name in boxes else None
        crops.append(crop_person(read_image(path), box, tuple(model.image_size)).image)
    if not crops:
        return None
    images = torch.stack(crops)
    if input_channels(model) == 6:  # the IUV branch gets an empty map: no DenseReg in the graph
        images = torch.cat([images, torch.zeros_like(images)], dim=1)
    return images


@dataclass
class ExportReport:
    """One method's export: what was exported and how it compares with PyTorch."""

    method: str
    backbone: str
    weights: str
    image_size: list[int]
    onnx_file: str
    onnx_mb: float
    parameters_m: float
    operators: list[str]
    outputs: list[str]
    max_abs_diff_random: float
    max_abs_diff_real: float | None
    max_rel_diff: float
    worst_output: str
    torch_ms: float
    onnxruntime_ms: float
    threads: int
    repeats: int
    load_average: float  # the machine's 1-minute load while timing: latencies on a busy machine are slower


def export_and_check(
    model: BaseMethod, method: str, weights: str, out_dir: Path, repeats: int = 20, seed: int = 0
) -> ExportReport:
    """Export `model`, compare onnxruntime with PyTorch on random (batch 1 and 2) and real inputs, time both."""
    model = model.cpu().eval()
    path = out_dir / f"{method}.onnx"
    graph, operators = export_onnx(model, path)
    threads = torch.get_num_threads()
    sess = session(path, threads)
    h, w = model.image_size
    generator = torch.Generator().manual_seed(seed)
    random_diffs, real_diffs = {}, {}
    for batch in (1, 2):
        image = torch.randn(batch, input_channels(model), h, w, generator=generator)
        for name, d in differences(graph, sess, image).items():
            random_diffs[name] = max(random_diffs.get(name, (0.0, 0.0)), d)
    real = real_inputs(model)
    if real is not None:
        real_diffs = differences(graph, sess, real)
    every = list(random_diffs.items()) + list(real_diffs.items())
    worst = max(every, key=lambda kv: kv[1][1])[0]
    one = torch.randn(1, input_channels(model), h, w, generator=generator)
    feed = {"image": one.numpy()}
    with torch.no_grad():
        torch_ms = median_ms(lambda: graph(one), repeats, warmup=3)
    ort_ms = median_ms(lambda: sess.run(None, feed), repeats, warmup=3)
    return ExportReport(
        method=method,
        backbone=str((model.hparams.get("backbone") or {}).get("name", "?")),
        weights=weights,
        image_size=[int(h), int(w)],
        onnx_file=str(path),
        onnx_mb=round(path.stat().st_size / 2**20, 2),
        parameters_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        operators=operators,
        outputs=list(graph.outputs),
        max_abs_diff_random=max(d[0] for d in random_diffs.values()),
        max_abs_diff_real=max(d[0] for d in real_diffs.values()) if real_diffs else None,
        max_rel_diff=max(d[1] for _, d in every),
        worst_output=worst,
        torch_ms=round(torch_ms, 2),
        onnxruntime_ms=round(ort_ms, 2),
        threads=threads,
        repeats=repeats,
        load_average=round(os.getloadavg()[0], 2),
    )


def write_results(report: ExportReport, results: Path) -> Path:
    """Merge `report` into results/export.json and rewrite the table results/export.md."""
    results.mkdir(parents=True, exist_ok=True)
    store = results / "export.json"
    reports = json.loads(store.read_text()) if store.is_file() else {}
    h, w = report.image_size
    reports[f"{report.method} {report.backbone} {h}x{w}"] = asdict(report)  # one row per architecture
    store.write_text(json.dumps(reports, indent=2, sort_keys=True) + "\n")
    lines = [
        "# ONNX export (opset 17, standard operators only), onnxruntime vs PyTorch",
        "",
        "Written by `make export METHOD=<m> CKPT=<ckpt>` (`python -m densehmr.export`). Max abs difference",
        "over every output of the graph (pixel-space vertices, heatmap logits, IUV maps, ...), on random",
        "inputs (batch 1 and 2) and on person crops of tests/data; relative: divided by the output's max",
        "|value|, worst output named; latency: batch 1, CPU, median of repeats, the same thread count for both",
        "(load: the machine's 1-minute load average then; on a shared machine latencies are only indicative).",
        "The differences are float32 rounding in different kernels: they grow with depth and input size, and",
        "are of the order of PyTorch's own float32 error (against float64). `untrained` rows: random weights,",
        "BatchNorm statistics from tests/data (sizes, latency and numerics of an architecture without a run).",
        "",
        "| method | backbone | weights | input (HxW) | params (M) | max abs diff random | max abs diff real "
        "| max rel diff (output) | PyTorch ms | onnxruntime ms | threads | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (reports[k] for k in sorted(reports)):
        real = "-" if r["max_abs_diff_real"] is None else f"{r['max_abs_diff_real']:.2e}"
        lines.append(
            f"| {r['method']} | {r['backbone']} | {r['weights']} | {r['image_size'][0]}x{r['image_size'][1]} "
            f"| {r['parameters_m']} "
            f"| {r['max_abs_diff_random']:.2e} | {real} | {r['max_rel_diff']:.1e} ({r['worst_output']}) "
            f"| {r['torch_ms']} | {r['onnxruntime_ms']} | {r['threads']} | {r.get('load_average', '-')} |"
        )
    table = results / "export.md"
    table.write_text("\n".join(lines) + "\n")
    return table


def untrained_method(method: str, overrides: list[str]) -> BaseMethod:
    """A freshly initialized method from the configs (for sizes and latency without a trained run), its
    BatchNorm statistics taken from the test images so that activations have a trained net's scale
    (with the initial statistics a deep net's outputs grow to ~1e5 and any comparison is meaningless)."""
    from densehmr.runs import build_method, compose_train

    model = build_method(compose_train([f"method={method}", *overrides]))
    images = real_inputs(model)
    if images is not None:
        calibrate_batchnorm(model, images)
    return model.eval()


def calibrate_batchnorm(model: nn.Module, images: Tensor, passes: int = 2) -> None:
    """Set every BatchNorm's running statistics to their average over `passes` forward passes of images."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(images)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densehmr.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, choices=method_names())
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ckpt", help="a checkpoint (default: the method's latest run)")
    source.add_argument("--run", help="a run folder")
    source.add_argument("--untrained", action="store_true", help="random weights from the configs")
    parser.add_argument("overrides", nargs="*", help="with --untrained: Hydra overrides (backbone=..., image_size=...)")
    parser.add_argument("--out", type=Path, default=Path("outputs/export"))
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        if args.untrained:
            model, weights = untrained_method(args.method, args.overrides), "untrained (BatchNorm from tests/data)"
        else:
            model, _ = load_method(run=args.run, ckpt=args.ckpt, method=args.method)
            weights = str(args.ckpt or args.run or f"runs/{args.method}/latest")
    except ModelError as err:
        print(f"error: {err}; train one (make train METHOD={args.method}) or pass --untrained", file=sys.stderr)
        return 2
    report = export_and_check(model, args.method, weights, args.out, repeats=args.repeats)
    table = write_results(report, args.results)
    print(
        f"{args.method}: {report.onnx_file} ({report.onnx_mb} MB); max abs diff random {report.max_abs_diff_random:.2e}"
        f", real {report.max_abs_diff_real}; PyTorch {report.torch_ms} ms, onnxruntime {report.onnxruntime_ms} ms"
        f" (batch 1, {report.threads} threads) -> {table}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

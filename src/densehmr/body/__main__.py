"""Body command line: `python -m densehmr.body info NAME [--json]`, `export-eval-data NAME OUT`,
`picture NAME OUT.png`."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np


def body_info(name: str) -> dict:
    from densehmr.body import load_body
    from densehmr.body.charts import flipped_fraction

    t0 = time.perf_counter()
    body = load_body(name)
    load_s = time.perf_counter() - t0
    stats = body.extras.get("stats", {})
    smpl = _smplx(body)
    return {
        "name": body.name,
        "model_file": str(body.model_file),
        "vertex_ids": body.vertex_ids,
        "num_vertices": body.num_vertices,
        "num_faces": int(body.faces.shape[0]),
        "num_joints": int(body.parents.shape[0]),
        "num_betas": int(smpl.num_betas),
        "lowpoly_vertices": body.lowpoly.num_vertices,
        "lowpoly_faces": int(body.lowpoly.charts.faces.shape[0]),
        "parts": sorted(int(p) for p in body.charts.face_part.unique()),
        "uv_flipped_fraction": flipped_fraction(body.charts.face_uv.numpy(), body.charts.face_part.numpy()),
        "upsampler_error_mm": stats.get("upsampler_error_mm"),
        "mirror_error_mm": stats.get("mirror_error_mm"),
        "geodesic_points": body.geodesic.num_points,
        "shape_variance_explained": stats.get("shape_variance_explained"),
        "template_height_m": float(np.ptp(body.v_template[:, 1].numpy())),
        "load_seconds": round(load_s, 3),
    }


def _smplx(body):
    from densehmr.body.smpl_layout import make_smplx

    return make_smplx(body.model_file, body.vertex_ids)


def export_eval_data(name: str, out: Path) -> None:
    from densehmr.body import load_body
    from densehmr.body.densepose_files import write_eval_data

    g = load_body(name).geodesic
    write_eval_data(
        out, g.point_part.numpy(), g.point_uv[:, 0].numpy(), g.point_uv[:, 1].numpy(),
        g.pdist.numpy(), g.mean_geodesic.numpy(), g.coarse_parts.numpy(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densehmr.body", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="summary of a body's assets")
    p_info.add_argument("name", nargs="?", default="open")
    p_info.add_argument("--json", action="store_true")
    p_exp = sub.add_parser("export-eval-data", help="write DensePose's evaluation-data files")
    p_exp.add_argument("name")
    p_exp.add_argument("out", type=Path)
    p_pic = sub.add_parser("picture", help="front/back views coloured by part, U, V; low-poly overlay")
    p_pic.add_argument("name", nargs="?", default="open")
    p_pic.add_argument("out", type=Path, nargs="?", default=Path("results/body/open_body.png"))
    args = parser.parse_args(argv)
    if args.command == "info":
        # smplx prints notices on stdout while the body loads; with --json only the JSON may go there.
        with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
            info = body_info(args.name)
        print(json.dumps(info) if args.json else json.dumps(info, indent=2))
    elif args.command == "export-eval-data":
        export_eval_data(args.name, args.out)
        print(f"wrote DensePose evaluation data to {args.out}")
    else:
        from densehmr.body import load_body
        from densehmr.viz.body_picture import draw_body

        draw_body(load_body(args.name), args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m densehmr.studies.report` (`make report`): results/REPORT.md, the seed papers' claims against
our numbers (results/compare.json, results/ablation.json).

Every verdict is computed from the numbers: a check compares two means; it agrees when the gap points the
claimed way by more than the seeds' spread (the standard deviations of the two sides, combined as
sqrt(sa² + sb²)), disagrees when it points the other way by more than that, and is inconclusive in between
or when either side has fewer than two seeds (no spread to judge the gap against).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from densehmr.studies.common import write_text
from densehmr.studies.keep import made_by
from densehmr.studies.tables import format_value


@dataclass(frozen=True)
class Ref:
    """A number in a results file: compare.json's methods[name][key] or ablation.json's
    studies[study].rows[label][key]."""

    source: str  # compare | ablation
    path: tuple[str, ...]  # (method,) or (study, row label)
    key: str

    def describe(self) -> str:
        return self.path[-1]


@dataclass(frozen=True)
class Check:
    """`a` is better than `b` (better: higher | lower). With `margin`, `a` need only be no worse than `b`
    by more than margin × |b| (margin 0: a ≥ b, "at least as good")."""

    a: Ref
    b: Ref
    better: str
    margin: float | None = None


@dataclass(frozen=True)
class Claim:
    name: str
    text: str
    source: str
    checks: tuple[Check, ...]


def _abl(study: str, label: str, key: str) -> Ref:
    return Ref("ablation", (study, label), key)


def _cmp(method: str, key: str) -> Ref:
    return Ref("compare", (method,), key)


GPS, VP_GPS, MPJPE, PA = "densepose/gps_ap", "vertexpose/densepose/gps_ap", "mesh/mpjpe", "mesh/pa_mpjpe"
CLAIMS = (
    Claim("meshpose_losses", "Each MeshPose loss group adds DensePose AP: L3D < L3D + L2D < L3D + L2D + LW",
          "MeshPose Table 2", (
              Check(_abl("meshpose_losses", "ablation=l3d_l2d", GPS), _abl("meshpose_losses", "ablation=l3d", GPS),
                    "higher"),
              Check(_abl("meshpose_losses", "ablation=full", GPS), _abl("meshpose_losses", "ablation=l3d_l2d", GPS),
                    "higher"))),
    Claim("uv_decoding", "Barycentric UV decoding is at least as good as closest-vertex and global-average "
          "decoding on VertexPose's DensePose AP", "MeshPose Table 1b", tuple(
              Check(_abl("meshpose_uv_decoding", "meshpose.uv_decoding=barycentric", VP_GPS),
                    _abl("meshpose_uv_decoding", f"meshpose.uv_decoding={other}", VP_GPS), "higher", margin=0.0)
              for other in ("closest", "global_average"))),
    Claim("vertexpose_vs_densereg", "VertexPose's DensePose is ahead of DenseReg's at the same backbone",
          "MeshPose Table 1a", (
              Check(_abl("vertexpose_vs_densereg", "method=meshpose", VP_GPS),
                    _abl("vertexpose_vs_densereg", "method=densereg", GPS), "higher"),)),
    Claim("meshpose_vs_hmr", "MeshPose is ahead of the HMR methods (PyMAF, DCT) on DensePose AP, with "
          "comparable PA-MPJPE (within 10%)", "MeshPose Tables 3-4, Figure 2", (
              *(Check(_cmp("meshpose", GPS), _cmp(m, GPS), "higher") for m in ("pymaf", "dct")),
              *(Check(_cmp("meshpose", PA), _cmp(m, PA), "lower", margin=0.10) for m in ("pymaf", "dct")))),
    Claim("pymaf_feedback", "PyMAF's mesh-aligned feedback beats grid and global feedback (lower MPJPE and "
          "PA-MPJPE, higher DensePose AP)", "PyMAF Table 4", tuple(
              Check(_abl("pymaf_feedback", "pymaf.feedback=mesh_aligned", key),
                    _abl("pymaf_feedback", f"pymaf.feedback={other}", key), better)
              for other in ("grid", "global") for key, better in ((MPJPE, "lower"), (PA, "lower"), (GPS, "higher")))),
    Claim("pymaf_aux_iuv", "PyMAF's auxiliary IUV supervision helps (lower MPJPE and PA-MPJPE)", "PyMAF Table 5",
          tuple(Check(_abl("pymaf_aux_iuv", "pymaf.aux_iuv=true", key),
                      _abl("pymaf_aux_iuv", "pymaf.aux_iuv=false", key), "lower") for key in (MPJPE, PA))),
    Claim("dct_dense", "DCT's dense correspondence supervision helps (lower PA-MPJPE, higher DensePose AP)",
          "DCT", (Check(_abl("dct_dense", "dct.dense_weight=1.0", PA), _abl("dct_dense", "dct.dense_weight=0.0", PA),
                        "lower"),
                  Check(_abl("dct_dense", "dct.dense_weight=1.0", GPS), _abl("dct_dense", "dct.dense_weight=0.0", GPS),
                        "higher"))),
    Claim("densereg_regression", "DenseReg's quantized regression (bins + residual) beats direct regression "
          "of U, V (higher DensePose AP)", "DenseReg", (
              Check(_abl("densereg_regression", "densereg.regression=quantized", GPS),
                    _abl("densereg_regression", "densereg.regression=direct", GPS), "higher"),)),
)


def lookup(ref: Ref, results: Mapping[str, Mapping]) -> Mapping | None:
    """The entry (mean, `<key>_std`, n_seeds, ...) holding ref's number, or None when it is missing."""
    data = results.get(ref.source)
    if not data:
        return None
    if ref.source == "compare":
        entry = data.get("methods", {}).get(ref.path[0])
    else:
        entry = data.get("studies", {}).get(ref.path[0], {}).get("rows", {}).get(ref.path[1])
    value = None if entry is None else entry.get(ref.key)
    return entry if isinstance(value, int | float) and math.isfinite(value) else None


# Average precisions both below half a point order nothing, whatever their seeds' spread.
AP_FLOOR = 0.005


def verdict(a: float, a_std: float | None, b: float, b_std: float | None, better: str,
            margin: float | None = None) -> tuple[str, float, float | None]:
    """(agree | disagree | inconclusive, gap, tolerance): gap > 0 when `a` is better than `b`."""
    gap = (a - b) if better == "higher" else (b - a)
    if a_std is None or b_std is None:
        return "inconclusive", gap, None  # one seed on a side: the gap cannot be told from seed noise
    tol = math.hypot(a_std, b_std)
    if margin is None:
        return ("agree" if gap > tol else "disagree" if gap < -tol else "inconclusive"), gap, tol
    allowed = margin * abs(b)
    return ("agree" if gap >= -allowed else "disagree" if gap < -allowed - tol else "inconclusive"), gap, tol


def judge(check: Check, results: Mapping[str, Mapping]) -> dict:
    """One check's numbers and verdict (`no data` when either side is missing)."""
    ea, eb = lookup(check.a, results), lookup(check.b, results)
    if ea is None or eb is None:
        return {"check": check, "verdict": "no data", "a": ea, "b": eb}
    a, b = ea[check.a.key], eb[check.b.key]
    result, gap, tol = verdict(a, ea.get(f"{check.a.key}_std"), b, eb.get(f"{check.b.key}_std"), check.better,
                               check.margin)
    if _kind(check.a.key) == "ap" and max(abs(a), abs(b)) < AP_FLOOR:
        result = "inconclusive"  # both near zero: the models have not learned what the claim compares
    return {"check": check, "verdict": result, "gap": gap, "tolerance": tol, "a": ea, "b": eb}


def combine(verdicts: Sequence[str]) -> str:
    """A claim agrees when every check agrees, disagrees when any check disagrees, else is inconclusive."""
    if all(v == "no data" for v in verdicts):
        return "no data"
    if "disagree" in verdicts:
        return "disagree"
    return "agree" if all(v == "agree" for v in verdicts) else "inconclusive"


def _kind(key: str) -> str:
    return "mm" if key.startswith("mesh/") else "ap"


def _num(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * (1 if _kind(key) == 'mm' else 100):+.1f}"


def same_models(judged: Mapping) -> bool:
    """Both sides of a judged check are evaluations of the same trained models (ablation rows of an
    evaluation-only option, see densehmr.studies.ablation)."""
    a, b = judged["a"], judged["b"]
    return bool(a and b and a.get("evaluation_only") and b.get("evaluation_only")
                and a.get("trained_runs") == b.get("trained_runs"))


SAME_MODELS = ("† a and b are evaluations of the same trained models, one per seed, with only an evaluation "
               "option changed: the gap is that option's alone, while the spread (each side's over seeds) also "
               "holds training noise, so such a verdict errs towards inconclusive.")


def claim_section(claim: Claim, results: Mapping[str, Mapping]) -> list[str]:
    judged = [judge(c, results) for c in claim.checks]
    lines = [f"## {claim.text}", "", f"Source: {claim.source}. **Verdict: {combine([j['verdict'] for j in judged])}**",
             "", "| check | ours: a | ours: b | gap (a better +) | spread | verdict |", "|---|---|---|---|---|---|"]
    commands: dict[str, None] = {}
    runs: dict[str, None] = {}
    for j in judged:
        c: Check = j["check"]
        relation = {"higher": ">", "lower": "<"}[c.better] if c.margin is None else (
            {"higher": "≥", "lower": "≤"}[c.better] + (f" (within {c.margin:.0%})" if c.margin else ""))
        name = f"{c.a.key}: {c.a.describe()} {relation} {c.b.describe()}" + (
            f" ({c.b.key})" if c.b.key != c.a.key else "") + (" †" if same_models(j) else "")
        cells = [format_value(e, r.key, _kind(r.key)) if e else "—" for e, r in ((j["a"], c.a), (j["b"], c.b))]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {_num(c.a.key, j.get('gap'))} | "
                     f"{_num(c.a.key, j.get('tolerance')).lstrip('+')} | {j['verdict']} |")
        for ref in (c.a, c.b) if j["verdict"] != "no data" else ():
            source = results.get(ref.source)
            commands[made_by(source, ref.path[0]) if source else f"(no {ref.source}.json)"] = None
            runs.update(dict.fromkeys(cell_commands(ref, results)))
    lines += ["", *([SAME_MODELS, ""] if any(same_models(j) for j in judged) else []),
              "Made by: " + ("; ".join(f"`{cmd}`" for cmd in commands) or "—"), ""]
    if runs:
        lines += ["<details><summary>the runs behind these numbers</summary>", "", *(f"- `{r}`" for r in runs), "",
                  "</details>", ""]
    return lines


def cell_commands(ref: Ref, results: Mapping[str, Mapping]) -> list[str]:
    """The training / evaluation commands of the runs behind a number."""
    data = results.get(ref.source) or {}
    if ref.source == "compare":
        return [c["command"] for c in data.get("cells", {}).values() if c.get("name") == ref.path[0]]
    row = data.get("studies", {}).get(ref.path[0], {}).get("rows", {}).get(ref.path[1], {})
    return list(row.get("commands", []))


def _provenance(name: str, data: Mapping) -> str:
    if not data:
        return f"results/{name}.json (missing)"
    settings = data.get("settings", {})
    trainer = settings.get("trainer", {})
    budget = [", ".join(f"{k}={trainer[k]}" for k in ("max_steps", "max_time") if k in trainer)]
    if settings.get("max_steps"):  # compare: each method's own steps
        budget.append("steps " + ", ".join(f"{m} {n}" for m, n in settings["max_steps"].items()))
    seeds = settings.get("seeds")
    return (f"results/{name}.json (commit `{str(settings.get('git_commit', '?'))[:9]}`"
            + "".join(f"; {b}" for b in budget if b) + (f"; seeds {seeds}" if seeds else "") + ")")


def report(results: Mapping[str, Mapping]) -> str:
    """REPORT.md's text from the loaded results files (source name -> dict; a missing one is empty)."""
    lines = ["# Claims of the seed papers, checked", "",
             "Generated by `python -m densehmr.studies.report` from "
             + ", ".join(_provenance(name, data) for name, data in results.items()) + ".", "",
             __doc__.split("\n\n", 1)[1].strip(), "",
             "AP ×100, errors in mm; numbers are mean ± standard deviation over seeds.", ""]
    for claim in CLAIMS:
        lines += claim_section(claim, results)
    return "\n".join(lines)


def load(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densehmr.studies.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"), help="folder of compare/ablation.json")
    parser.add_argument("--out", type=Path, help="default: <results>/REPORT.md")
    args = parser.parse_args(argv)
    results = {name: load(args.results / f"{name}.json") for name in ("compare", "ablation")}
    if not any(results.values()):
        print(f"error: neither {args.results}/compare.json nor ablation.json exists: run `make compare` and/or "
              "`make ablation` first", file=sys.stderr)
        return 2
    out = write_text(args.out or args.results / "REPORT.md", report(results))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

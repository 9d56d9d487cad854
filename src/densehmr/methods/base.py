"""The LightningModule every method derives from.

A method implements three things and nothing else:
- `forward(image) -> dict` of raw network outputs;
- `loss_terms(out, batch, targets) -> dict[name, scalar]` of *unweighted* loss terms; only terms whose weight
  in `loss_weights` is non-zero are asked for (`self.active(name)`), so a weight of 0 removes a term;
- `predict(out, batch, targets=None) -> Prediction`: what it has of the prediction interface (`iuv` (B,3,H,W) I,U,V per
  crop pixel; `mask` (B,H,W); `verts` (B,V,3) metres, camera frame, full mesh; `kp2d` (B,17,3) COCO-17 crop
  px + score), plus optional extra IUV predictions under other metric prefixes.
The base does the rest: the batch's `Targets` (once per step, `targets(batch)`; a method extends them),
weighting and logging each term, optimizers, shared metrics, pictures.
The contracts (crop frame, batch keys, `Prediction`, loss terms, metric keys): docs/architecture.md.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
from torch import Tensor

from densehmr.body import Body, load_body
from densehmr.fault import check_loss
from densehmr.metrics import DensePoseAP, KeypointAP, MaskIoU, MeshError
from densehmr.metrics.densepose_ap import PROTOCOLS, UNMASKED
from densehmr.optim import build_optimization
from densehmr.render import gt_mesh_iuv
from densehmr.viz.iuv import annotated_iuv

log = logging.getLogger(__name__)

# Metrics whose compute() is one number, and its key's last part (docs/architecture.md, "Metric keys").
_SCALAR_METRIC_NAMES = {"mask": "iou"}
PICTURE_SAMPLES = 4  # samples shown side by side in a logged picture


@dataclass
class Prediction:
    """The prediction interface every metric reads (docs/architecture.md, "`Prediction`"); a method fills
    what it has."""

    iuv: Tensor | None = None
    mask: Tensor | None = None
    verts: Tensor | None = None
    kp2d: Tensor | None = None
    extra_iuv: dict[str, Tensor] = field(default_factory=dict)  # metric prefix -> (B,3,H,W)


@dataclass
class Targets:
    """What a method derives from a batch, once per step (`BaseMethod.targets`), and hands to
    `network_input`, `loss_terms`, `predict`, the metrics and the pictures; the batch itself is never
    written to (docs/architecture.md, "Targets"). A method with more derived targets subclasses it."""

    verts: Tensor | None  # (B, V, 3) GT full mesh, camera frame, metres; None without SMPL-format parameters


class BaseMethod(pl.LightningModule, ABC):
    """Shared training/validation logic. Subclasses build their network in __init__."""

    name = "base"
    nonfinite_policy = "raise"  # or "skip"; set from trainer_extra.nonfinite (densehmr.fault.NonFinitePolicy)
    # How `densepose/*` scores the predicted IUV (DensePoseAP's protocol): methods that render a mesh
    # use MeshPose's "gt_mask"; the option `densepose_protocol` overrides it.
    default_densepose_protocol = UNMASKED

    def __init__(
        self,
        *,
        body: Mapping,
        loss_weights: Mapping[str, float],
        optimizer: Mapping,
        scheduler: Mapping | None,
        image_size: tuple[int, int],
        log_images_every_n_steps: int,
        densepose_kappa: str,
        densepose_protocol: str | None,
    ) -> None:
        """Every argument comes from the config (`runs.build_method`; docs/architecture.md, "Configs"): the
        run's settings shared by all methods, and `method.module.loss_weights`. densepose_protocol None is the
        method's `default_densepose_protocol`."""
        super().__init__()
        self.body: Body = load_body(**body)
        self.loss_weights = {k: float(v) for k, v in loss_weights.items()}
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler or {})
        self.image_size = tuple(image_size)
        self.log_images_every_n_steps = log_images_every_n_steps
        self.densepose_kappa = densepose_kappa
        self.densepose_protocol = densepose_protocol or self.default_densepose_protocol
        if self.densepose_protocol not in PROTOCOLS:
            raise ValueError(f"densepose_protocol must be one of {PROTOCOLS}, got {self.densepose_protocol!r}")
        self._metrics: torch.nn.ModuleDict | None = None
        self._gt_body: dict = {}
        # Per active loss term: whether any batch of this epoch supervised it (a term without a supervised
        # sample is exactly zero); the terms already warned about.
        self._supervised: dict[str, Tensor] = {}
        self._unsupervised_warned: set[str] = set()
        self._neutral_said = False

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    def loss_terms(self, out: dict, batch: dict, targets: Targets) -> dict[str, Tensor]:
        """Unweighted scalar loss terms, only those with a non-zero weight (see `active`)."""

    @abstractmethod
    def predict(self, out: dict, batch: dict, targets: Targets | None = None) -> Prediction:
        """The prediction interface from the raw outputs; targets where the batch has them (training and
        evaluation, not photographs), for methods with an oracle option."""

    # ----------------------------------------------------------------- shared
    def targets(self, batch: dict) -> Targets:
        """The batch's targets (see `Targets`); methods with more override and extend."""
        return Targets(verts=self.gt_vertices(batch))

    def network_input(self, batch: dict, targets: Targets | None) -> Tensor:
        """What `forward` receives: the image (B,3,H,W); methods with extra input channels override (targets:
        None on photographs)."""
        return batch["image"]

    def active(self, term: str) -> bool:
        return self.loss_weights.get(term, 0.0) != 0.0

    def compute_loss(self, out: dict, batch: dict, targets: Targets) -> tuple[Tensor, dict[str, Tensor]]:
        """Total weighted loss and each weighted term (for logging); the terms are computed in float32
        whatever the training precision (bf16 pixel coordinates are 0.5 px coarse at 128 px)."""
        with torch.autocast(device_type=batch["image"].device.type, enabled=False):
            terms = self.loss_terms(_to_float(out), batch, targets)
        unknown = set(terms) - set(self.loss_weights)
        if unknown:
            raise KeyError(f"{self.name}: loss terms without a weight in config: {sorted(unknown)}")
        weighted = {k: self.loss_weights[k] * v for k, v in terms.items() if self.active(k)}
        total = torch.stack(list(weighted.values())).sum() if weighted else self.image_anchor(out)
        return total, weighted

    @staticmethod
    def image_anchor(out: dict) -> Tensor:
        """A zero that keeps the graph connected when every term is ablated."""
        return sum(v.sum() * 0.0 for v in out.values() if isinstance(v, Tensor) and v.requires_grad)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        targets = self.targets(batch)
        out = self(self.network_input(batch, targets))
        total, weighted = self.compute_loss(out, batch, targets)
        if not check_loss(self, total, weighted, self.nonfinite_policy):
            return None  # Lightning skips the backward pass and the optimizer step
        bs = batch["image"].shape[0]
        for k, v in weighted.items():
            self.log(f"train/loss_{k}", v, batch_size=bs)
            seen = v.detach() != 0
            self._supervised[k] = self._supervised[k] | seen if k in self._supervised else seen
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        if self.log_images_every_n_steps and self.global_step % self.log_images_every_n_steps == 0:
            self.log_pictures(out, batch, targets, "train")
        return total

    def on_train_epoch_end(self) -> None:
        """One warning per configured loss term that no sample of a whole epoch supervised."""
        names = sorted(self._supervised)
        if names:
            seen = self.all_gather(torch.stack([self._supervised[k] for k in names])).reshape(-1, len(names))
            missing = [k for k, s in zip(names, seen.any(0).tolist(), strict=True) if not s]
            for name in set(missing) - self._unsupervised_warned:
                if self.global_rank == 0:
                    log.warning(
                        "%s: loss term '%s' (weight %g) had no supervised sample in epoch %d: the data carries "
                        "none of what it needs", self.name, name, self.loss_weights[name], self.current_epoch,
                    )
                self._unsupervised_warned.add(name)
        self._supervised = {}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _eval_step(self, batch: dict, batch_idx: int, stage: str) -> None:
        targets = self.targets(batch)
        out = self(self.network_input(batch, targets))
        total, _ = self.compute_loss(out, batch, targets)
        self.log(f"{stage}/loss", total, batch_size=batch["image"].shape[0], sync_dist=True)
        pred = self.predict(out, batch, targets)
        self.update_metrics(pred, batch, targets)
        if batch_idx == 0:
            self.log_pictures(out, batch, targets, stage, pred)

    def on_validation_epoch_end(self) -> None:
        self.log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.log_metrics("test")

    # ----------------------------------------------------------------- metrics
    def metrics(self) -> torch.nn.ModuleDict:
        if self._metrics is None:
            geo = self.body.geodesic
            self._metrics = torch.nn.ModuleDict(
                {
                    "densepose": DensePoseAP(geo, kappa=self.densepose_kappa, protocol=self.densepose_protocol),
                    "keypoints": KeypointAP(),
                    "mesh": MeshError(self.body.regressors["h36m17"]),
                    "mask": MaskIoU(),
                }
            ).to(self.device)
        return self._metrics

    def extra_metric(self, prefix: str) -> DensePoseAP:
        key = prefix.replace("/", "__")
        m = self.metrics()
        if key not in m:
            m[key] = DensePoseAP(self.body.geodesic, kappa=self.densepose_kappa).to(self.device)
        return m[key]

    def update_metrics(self, pred: Prediction, batch: dict, targets: Targets) -> None:
        m = self.metrics()
        dp_args = dict(
            dp_xy=batch["dp_xy"], dp_I=batch["dp_I"], dp_U=batch["dp_U"], dp_V=batch["dp_V"],
            dp_valid=batch["dp_valid"], gt_mask=batch["mask"] > 0.5, bbox=batch["bbox"], has_dp=batch["has_dp"],
        )
        if pred.iuv is not None:
            m["densepose"].update_crops(pred.iuv, **dp_args)
        for prefix, iuv in pred.extra_iuv.items():
            self.extra_metric(prefix).update_crops(iuv, **dp_args)
        if pred.mask is not None:
            keep = batch["has_mask"]
            if keep.any():
                m["mask"].update(pred.mask[keep] > 0.5, batch["mask"][keep] > 0.5)
        if pred.kp2d is not None:
            m["keypoints"].update_crops(pred.kp2d, batch["kp2d"], batch["bbox"], batch["area"], batch["has_kp2d"])
        if pred.verts is not None and batch["has_smpl"].any():
            keep = batch["has_smpl"]
            m["mesh"].update(pred.verts[keep], targets.verts[keep])
        if pred.verts is not None and "has_kp3d" in batch:
            # Motion-capture joints without a body (Human3.6M protocol 2, MPI-INF-3DHP): errors from them.
            keep = batch["has_kp3d"] & ~batch["has_smpl"]
            if keep.any():
                m["mesh"].update(pred_verts=pred.verts[keep], gt_joints=batch["kp3d"][keep][..., :3])

    def log_metrics(self, stage: str) -> dict[str, float]:
        """Compute, log under the metric keys (docs/architecture.md, "Metric keys"), reset. Returns the flat
        dict."""
        m = self.metrics()
        flat: dict[str, float] = {}
        for key, metric in m.items():
            if not metric.update_called:
                continue
            prefix = key.replace("__", "/")
            values = metric.compute()
            if not isinstance(values, Mapping):
                values = {_SCALAR_METRIC_NAMES.get(key, "value"): values}
            for name, value in _flatten(values).items():
                flat[f"{prefix}/{name}"] = float(value)
            metric.reset()
        # Test metrics carry the bare keys (densepose/gps_ap, ...); validation ones a `val/` prefix.
        keyed = {(k if stage == "test" else f"{stage}/{k}"): v for k, v in flat.items()}
        for k, v in keyed.items():
            self.log(k, v)
        self.last_metrics = {**getattr(self, "last_metrics", {}), **keyed}
        return flat

    # ----------------------------------------------------------------- ground truth on device
    def gt_vertices(self, batch: dict) -> Tensor | None:
        """(B,V,3) camera-frame GT vertices from the SMPL-format parameters, on device (None without them):
        from the body's gendered models (`extras["gendered_model_files"]`: {"male": path, "female": path}) for
        samples with a gender (`gender` 1 male, 2 female) when it has them, else from its neutral model."""
        if "betas" not in batch:
            return None
        verts = self._gt_vertices(self.body.model_file, batch)
        gender = batch.get("gender")
        files = self.body.extras.get("gendered_model_files")
        if gender is not None and files:
            for code, key in ((1, "male"), (2, "female")):
                pick = (gender == code) & batch["has_smpl"]
                if pick.any():
                    verts = torch.where(pick[:, None, None], self._gt_vertices(files[key], batch), verts)
        elif gender is not None and not self._neutral_said and bool((gender[batch["has_smpl"]] > 0).any()):
            self._neutral_said = True
            log.warning("GT bodies with a gender are the neutral body's: body '%s' has no gendered models",
                        self.body.name)
        return verts + batch["cam_t"][:, None].float()

    def _gt_vertices(self, model_file, batch: dict) -> Tensor:
        """(B, V, 3) vertices of the batch's SMPL-format parameters under a body file's model, which is
        kept on this module's device outside its state (checkpoints never depend on it)."""
        model = self._gt_body.get(model_file)
        if model is None or model.v_template.device != self.device:
            from densehmr.body.smpl_layout import make_smplx

            model = self._gt_body[model_file] = make_smplx(model_file, self.body.vertex_ids).to(self.device)
        with torch.no_grad():
            return model(
                betas=batch["betas"].float(), body_pose=batch["body_pose"].float(),
                global_orient=batch["global_orient"].float(),
            ).vertices

    def gt_iuv(self, batch: dict, targets: Targets, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """IUV (B, 3, h, w) of the GT meshes (`targets.verts`) rendered by their crop cameras on an (h, w) grid
        over the crop, and which samples (B,) have one (SMPL parameters and a camera): `render.gt_mesh_iuv`."""
        has_mesh = batch["has_smpl"] & batch["has_cam"]
        return gt_mesh_iuv(targets.verts, batch["cam_K"], has_mesh, self.body.charts, self.image_size, size)

    # ----------------------------------------------------------------- optim
    def configure_optimizers(self):
        def total_steps() -> int:
            return int(self.trainer.estimated_stepping_batches)

        return build_optimization(self.parameters(), self.optimizer_cfg, self.scheduler_cfg, total_steps)

    # ----------------------------------------------------------------- pictures
    def log_pictures(
        self, out: dict, batch: dict, targets: Targets, stage: str, pred: Prediction | None = None
    ) -> None:
        """Methods override `pictures(out, batch, pred, targets)` to return name -> (H,W,3) uint8 images; logged
        if a logger takes them."""
        if self.logger is None or not hasattr(self, "pictures"):
            return
        with torch.no_grad():
            pred = pred if pred is not None else self.predict(out, batch, targets)
            images = self.pictures(out, batch, pred, targets)
        from densehmr.viz.logging import log_images

        log_images(self, images, stage)

    def picture_gt_iuv(self, batch: dict, targets: Targets, n: int) -> Tensor:
        """(n, 3, H, W) CPU IUV maps of the first n samples' ground truth for pictures: the GT mesh rendered
        where a sample has one and a camera, else its annotated points."""
        size = self.image_size
        gt = torch.stack([annotated_iuv(batch, i, size) for i in range(n)])
        if targets.verts is not None:
            first = {k: v[:n] for k, v in batch.items() if isinstance(v, Tensor)}
            rendered, keep = self.gt_iuv(first, Targets(verts=targets.verts[:n]), size)
            gt = torch.where(keep.cpu()[:, None, None, None], rendered.cpu(), gt)
        return gt


def _to_float(values):
    """Floating tensors of a (nested) dict / list / tuple in float32, other values as they are."""
    if isinstance(values, Mapping):
        return {k: _to_float(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return type(values)(_to_float(v) for v in values)
    if isinstance(values, Tensor) and values.is_floating_point():
        return values.float()
    return values


def _flatten(values, prefix: str = "") -> dict[str, Tensor]:
    if isinstance(values, Mapping):
        out = {}
        for k, v in values.items():
            out.update(_flatten(v, f"{prefix}{k}/" if isinstance(v, Mapping) else f"{prefix}{k}"))
        return out
    return {prefix.rstrip("/"): values}

"""Samples -> batch: stacks fixed-size keys, pads the ragged DensePose point lists, drops skipped samples.

Batch (B samples, P = most points in the batch, at least 1; padding has dp_valid False, dp_I 0, face 0):
  image (B, 3, H, W) float ImageNet-normalized; mask (B, H, W) float 0/1; mask_parts (B, H, W) long 0..14
  (DensePose's 14 coarse parts); dp_xy (B, P, 2) crop px; dp_I (B, P) long; dp_U, dp_V (B, P);
  dp_valid (B, P) bool; dp_face (B, P) long, dp_bary (B, P, 3) on the full mesh; dp_face_low, dp_bary_low on
  the low-poly mesh; kp2d (B, 17, 3) crop px + visibility; kp3d (B, 17, 4) camera-frame metres (H36M-17);
  global_orient (B, 3); body_pose (B, 69); betas (B, 10); cam_K (B, 3, 3) crop px; cam_t (B, 3) metres;
  bbox (B, 4) xywh crop px; area (B,) crop px^2; affine (B, 2, 3) crop -> image; image_id, ann_id (B,) long;
  has_dp, has_kp2d, has_kp3d, has_smpl, has_mask, has_mask_parts, has_cam (B,) bool; gender (B,) long
  of the GT body (0 neutral / unknown, 1 male, 2 female);
  skipped: {reason: count} of the samples dropped or replaced for this batch (not a tensor).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from datamodules.dataset import Skipped

RAGGED_KEYS = (
    "dp_xy",
    "dp_I",
    "dp_U",
    "dp_V",
    "dp_valid",
    "dp_face",
    "dp_bary",
    "dp_face_low",
    "dp_bary_low",
)


def collate_samples(samples: Sequence[dict[str, Tensor] | Skipped]) -> dict:
    """One batch of the kept samples; a batch whose samples were all skipped holds only "skipped"."""
    kept = [s for s in samples if not isinstance(s, Skipped)]
    skipped: Counter[str] = Counter()
    for s in samples:
        skipped.update(s.kinds if isinstance(s, Skipped) else s.get("skipped", ()))
    batch: dict = {}
    if kept:
        points = max(1, max(int(s["dp_I"].shape[0]) for s in kept))
        for key in kept[0]:
            if key == "skipped":
                continue
            if key in RAGGED_KEYS:
                batch[key] = _pad_stack([s[key] for s in kept], points)
            else:
                batch[key] = torch.stack([s[key] for s in kept])
    batch["skipped"] = dict(skipped)
    return batch


def _pad_stack(tensors: list[Tensor], length: int) -> Tensor:
    """(B, length, ...) from tensors (n_i, ...), zero-padded along the first axis."""
    first = tensors[0]
    out = first.new_zeros((len(tensors), length, *first.shape[1:]))
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out

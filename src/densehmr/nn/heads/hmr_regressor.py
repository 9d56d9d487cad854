"""HMR's iterative error feedback regressor: body parameters refined as residuals from an estimate.

Each iteration reads [features, pose 6D (144), betas, cam (3)] through fc 1024 - dropout - fc 1024 -
dropout and adds its decoded residuals to the estimate. The first estimate is the body's mean
parameters (`densehmr.body.mean_params`) unless one is given (PyMAF chains three regressors so).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from densehmr.geometry.rotations import rot6d_to_rotmat

NUM_JOINTS = 24
POSE_DIM = NUM_JOINTS * 6
CAM_DIM = 3
# Residual decoders start near zero so the first estimates stay near the mean (HMR, SPIN); their
# biases start at zero too, so an untrained regressor's residual is independent of its width.
DECODER_INIT_GAIN = 0.01


@dataclass
class BodyEstimate:
    """pose6d (B, 144) 24 joint rotations in 6D, global orient first; betas (B, S); cam (B, 3) weak
    perspective (s, tx, ty) of the crop."""

    pose6d: Tensor
    betas: Tensor
    cam: Tensor

    @property
    def rotmat(self) -> Tensor:
        """(B, 24, 3, 3) rotation matrices."""
        return rot6d_to_rotmat(self.pose6d.reshape(-1, NUM_JOINTS, 6))

    def detach(self) -> BodyEstimate:
        return BodyEstimate(self.pose6d.detach(), self.betas.detach(), self.cam.detach())


class HMRRegressor(nn.Module):
    """`regressor(features (B, in_features), init=None) -> BodyEstimate` after `iterations` refinements.

    mean_params: pose (144,), shape (S,), cam (3,) tensors (see `load_mean_params`); kept as buffers so
    a checkpoint carries the mean it was trained from.
    """

    def __init__(
        self,
        in_features: int,
        mean_params: dict[str, Tensor],
        *,
        hidden: int,
        dropout: float,
        iterations: int,
    ) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        num_betas = int(mean_params["shape"].numel())
        self.iterations = iterations
        self.register_buffer("mean_pose", mean_params["pose"].float().reshape(1, POSE_DIM).clone())
        self.register_buffer("mean_betas", mean_params["shape"].float().reshape(1, num_betas).clone())
        self.register_buffer("mean_cam", mean_params["cam"].float().reshape(1, CAM_DIM).clone())
        self.trunk = nn.Sequential(
            nn.Linear(in_features + POSE_DIM + num_betas + CAM_DIM, hidden),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.Dropout(dropout),
        )
        self.dec_pose = nn.Linear(hidden, POSE_DIM)
        self.dec_betas = nn.Linear(hidden, num_betas)
        self.dec_cam = nn.Linear(hidden, CAM_DIM)
        for layer in (self.dec_pose, self.dec_betas, self.dec_cam):
            nn.init.xavier_uniform_(layer.weight, gain=DECODER_INIT_GAIN)
            nn.init.zeros_(layer.bias)

    def mean_estimate(self, batch: int) -> BodyEstimate:
        """The mean parameters repeated for `batch` samples."""
        return BodyEstimate(
            self.mean_pose.expand(batch, -1), self.mean_betas.expand(batch, -1), self.mean_cam.expand(batch, -1)
        )

    def forward(self, features: Tensor, init: BodyEstimate | None = None) -> BodyEstimate:
        est = init if init is not None else self.mean_estimate(features.shape[0])
        pose, betas, cam = est.pose6d, est.betas, est.cam
        for _ in range(self.iterations):
            hidden = self.trunk(torch.cat([features, pose, betas, cam], dim=1))
            pose = pose + self.dec_pose(hidden)
            betas = betas + self.dec_betas(hidden)
            cam = cam + self.dec_cam(hidden)
        return BodyEstimate(pose, betas, cam)

"""Joint layouts of the SPIN-format files and the tables that map them onto ours, by joint name.

SPIN's files keep 2D keypoints (`part`) and 3D joints (`S`) in one 24-joint superset of every dataset's
joints (its `constants.JOINT_NAMES[25:]`); a dataset fills the slots it annotates and leaves the rest at
confidence 0. OpenPose detections (`openpose`) are in OpenPose's BODY_25 order. Ours are COCO-17 for 2D
keypoints and H36M-17 for 3D joints (0 pelvis, 1-3 right hip/knee/ankle, 4-6 left, 7 spine, 8 thorax,
9 neck/nose, 10 head, 11-13 left shoulder/elbow/wrist, 14-16 right).
"""

from __future__ import annotations

import numpy as np

SPIN24_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck_lsp", "top_of_head_lsp", "pelvis_mpii", "thorax_mpii", "spine_h36m", "jaw_h36m", "head_h36m",
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
)
OPENPOSE25_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel",
    "right_big_toe", "right_small_toe", "right_heel",
)
COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
H36M17_NAMES = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "spine", "thorax", "neck_nose", "head",
    "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
)
# Where SPIN's preprocessing puts each H36M-17 joint of Human3.6M and MPI-INF-3DHP: the pelvis in the
# MPII pelvis slot, the thorax in the LSP neck slot, the neck/nose in the jaw slot (SPIN's `global_idx`).
_H36M17_SLOT = {
    "pelvis": "pelvis_mpii",
    "spine": "spine_h36m",
    "thorax": "neck_lsp",
    "neck_nose": "jaw_h36m",
    "head": "head_h36m",
}


def _indices(names: tuple[str, ...], source: tuple[str, ...], rename: dict[str, str] | None = None) -> np.ndarray:
    """(len(names),) int64: the index in `source` of each name (after `rename`)."""
    rename = rename or {}
    return np.array([source.index(rename.get(name, name)) for name in names], dtype=np.int64)


COCO17_FROM_SPIN24 = _indices(COCO17_NAMES, SPIN24_NAMES)
H36M17_FROM_SPIN24 = _indices(H36M17_NAMES, SPIN24_NAMES, _H36M17_SLOT)
COCO17_FROM_OPENPOSE25 = _indices(COCO17_NAMES, OPENPOSE25_NAMES)


def spin24_from(values: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """(N, 24, C) SPIN-24 layout of (N, J, C) joints whose joint j sits in SPIN slot slots[j]; the
    other slots zero (confidence 0), as SPIN's preprocessing leaves unannotated joints."""
    out = np.zeros((values.shape[0], len(SPIN24_NAMES), values.shape[2]), dtype=values.dtype)
    out[:, slots] = values
    return out

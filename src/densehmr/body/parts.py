"""DensePose's 24-part segmentation of a skinned mesh, from its SMPL-joint skinning weights.

Each face takes the body region of its dominant joint (torso, head, upper/lower legs and arms, hands,
feet); limbs and torso are then split into back and front halves by the side of the bone axis the face
lies on (+z is the front in the T-pose; split halfway through the region's depth), and the head into
right (x < 0) and left halves, giving
DensePose's part ids and meanings (see assets.PART_NAMES).
"""

from __future__ import annotations

import numpy as np

from densehmr.body.mesh_utils import face_adjacency, relabel_islands

# SMPL joint -> (region, side); the axis of a region runs from the first to the second joint.
_REGION_OF_JOINT = {
    0: "torso", 3: "torso", 6: "torso", 9: "torso", 13: "torso", 14: "torso",
    12: "head", 15: "head",
    1: "upper_leg_L", 2: "upper_leg_R", 4: "lower_leg_L", 5: "lower_leg_R",
    7: "foot_L", 10: "foot_L", 8: "foot_R", 11: "foot_R",
    16: "upper_arm_L", 17: "upper_arm_R", 18: "lower_arm_L", 19: "lower_arm_R",
    20: "hand_L", 22: "hand_L", 21: "hand_R", 23: "hand_R",
}
_AXIS = {
    "torso": (0, 12),
    "upper_leg_L": (1, 4), "upper_leg_R": (2, 5), "lower_leg_L": (4, 7), "lower_leg_R": (5, 8),
    "upper_arm_L": (16, 18), "upper_arm_R": (17, 19), "lower_arm_L": (18, 20), "lower_arm_R": (19, 21),
}
# (back part, front part) of each split region, DensePose ids.
_BACK_FRONT = {
    "torso": (1, 2),
    "upper_leg_R": (7, 9), "upper_leg_L": (8, 10), "lower_leg_R": (11, 13), "lower_leg_L": (12, 14),
    "upper_arm_L": (15, 17), "upper_arm_R": (16, 18), "lower_arm_L": (19, 21), "lower_arm_R": (20, 22),
}
_WHOLE = {"hand_R": 3, "hand_L": 4, "foot_L": 5, "foot_R": 6}


def assign_parts(verts: np.ndarray, faces: np.ndarray, weights: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """DensePose part (F,) in 1..24 of each face.

    verts (V, 3) T-pose metres, faces (F, 3), weights (V, 24) SMPL skinning weights, joints (24, 3).
    """
    regions = sorted(set(_REGION_OF_JOINT.values()))
    joint_region = np.array([regions.index(_REGION_OF_JOINT[j]) for j in range(24)])
    region_weight = np.zeros((len(verts), len(regions)))
    np.add.at(region_weight.T, joint_region, weights.T)
    face_region = region_weight[faces].sum(1).argmax(1)
    centroid = verts[faces].mean(1)

    part = np.zeros(len(faces), dtype=np.int64)
    for r, name in enumerate(regions):
        sel = face_region == r
        if name in _WHOLE:
            part[sel] = _WHOLE[name]
        elif name == "head":
            part[sel] = np.where(centroid[sel, 0] < 0, 23, 24)
        else:
            a, b = joints[_AXIS[name][0]], joints[_AXIS[name][1]]
            axis = (b - a) / np.linalg.norm(b - a)
            rel = centroid[sel] - a
            offset = rel - (rel @ axis)[:, None] * axis
            # Split halfway through the region's depth, not at the bone (the spine lies near the back).
            depth = offset[:, 2] - 0.5 * (offset[:, 2].max() + offset[:, 2].min())
            back, front = _BACK_FRONT[name]
            part[sel] = np.where(depth >= 0, front, back)
    return relabel_islands(faces, part, face_adjacency(faces))

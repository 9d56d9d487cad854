"""Joint regressors over the full mesh, and smplx's extra-joint vertex ids.

A joint regressor row is a convex combination of the template vertices nearest the joint, fitted by
non-negative least squares over many shaped samples so that it tracks the joint across body shapes
(the way SMPL's J_regressor was learnt).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls
from scipy.spatial import cKDTree

# H36M-17 joints as SMPL joints (see assets.H36M17_MIRROR for the order); the rest are built below.
_H36M_FROM_SMPL = {0: 0, 1: 2, 2: 5, 3: 8, 4: 1, 5: 4, 6: 7, 8: 12, 11: 16, 12: 18, 13: 20, 14: 17, 15: 19, 16: 21}

COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)


def fit_joint_regressor(
    verts: np.ndarray, joints: np.ndarray, template: np.ndarray, neighbours: int = 256
) -> np.ndarray:
    """(J, V) non-negative rows summing to 1. verts (N, V, 3), joints (N, J, 3) over N shaped samples."""
    n, v, _ = verts.shape
    tree = cKDTree(template)
    reg = np.zeros((joints.shape[1], v))
    for j in range(joints.shape[1]):
        _, cand = tree.query(joints[:, j].mean(0), k=neighbours)
        a = verts[:, cand, :].transpose(0, 2, 1).reshape(n * 3, neighbours)
        b = joints[:, j, :].reshape(n * 3)
        # A heavily weighted row enforces sum(w) = 1 (affine combination, translation-equivariant).
        big = 1e3
        a = np.vstack([a, big * np.ones((1, neighbours))])
        b = np.concatenate([b, [big]])
        w, _ = nnls(a, b, maxiter=5000)
        reg[j, cand] = w / w.sum()
    return reg


def h36m_regressor(smpl_reg: np.ndarray, coco_reg: np.ndarray, template: np.ndarray) -> np.ndarray:
    """(17, V) H36M-17 regressor: SMPL joints where they coincide, spine midway pelvis-thorax,
    neck/nose from COCO's nose, head top from the highest vertices."""
    reg = np.zeros((17, smpl_reg.shape[1]))
    for h, s in _H36M_FROM_SMPL.items():
        reg[h] = smpl_reg[s]
    reg[7] = 0.5 * (smpl_reg[0] + smpl_reg[12])
    reg[9] = coco_reg[COCO17_NAMES.index("nose")]
    top = np.argsort(template[:, 1])[-12:]
    reg[10, top] = 1.0 / len(top)
    return reg


def extra_joint_vertex_ids(
    template: np.ndarray, coco: dict[str, np.ndarray], bone_verts: dict[str, np.ndarray]
) -> dict[str, int]:
    """Vertex ids for smplx's extra joints (face keypoints, toes, heels, finger tips).

    coco: COCO-style vertex weights (nose, eyes, ears, toes, heels) over the template;
    bone_verts: name -> indices of vertices of each finger's distal bone ('lthumb', ..., 'rpinky').
    """
    ids = {}
    for key, name in (("nose", "nose"), ("reye", "right_eye"), ("leye", "left_eye"),
                      ("rear", "right_ear"), ("lear", "left_ear"),
                      ("LBigToe", "left_big_toe"), ("LSmallToe", "left_small_toe"), ("LHeel", "left_heel"),
                      ("RBigToe", "right_big_toe"), ("RSmallToe", "right_small_toe"), ("RHeel", "right_heel")):
        point = coco[name] @ template
        ids[key] = int(np.argmin(np.linalg.norm(template - point, axis=1)))
    for key, verts in bone_verts.items():
        outward = np.sign(template[verts, 0].mean())  # finger tips point away from the body along x
        ids[key] = int(verts[np.argmax(outward * template[verts, 0])])
    return ids

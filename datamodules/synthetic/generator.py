"""Render one synthetic image with its annotations, deterministically from (seed, split, index).

The people are open-body meshes posed through smplx, rasterized together by `densehmr.render`
(one batch per image, composited by depth), coloured by `appearance` and pasted on a procedural
background, with occluders in front. Annotations come from the same label maps the image was made
from, so every dense point's (I, U, V) is the rendered one at its pixel.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from datamodules.synthetic import annotations as ann
from datamodules.synthetic.appearance import (
    Landmarks,
    Lights,
    Outfit,
    albedo,
    lambert,
    material_index,
    sample_lights,
    sample_outfit,
)
from datamodules.synthetic.background import background, occluders
from datamodules.synthetic.poses import euler_to_axis_angle
from datamodules.synthetic.scene import ScenePlan, place, sample_plan, world_orientation
from densehmr.body.assets import Body
from densehmr.body.smpl_layout import make_smplx
from densehmr.render import Fragments, PerspectiveCamera, rasterize, render_iuv

# A person with fewer visible pixels than this is left unannotated (as COCO leaves tiny people).
MIN_VISIBLE_PIXELS = 64
HEAD_JOINT = 15
JPEG_QUALITY = (80, 96)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of image `index` of `split` (splits of one seed never share images)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


@dataclass
class SyntheticSample:
    """One generated image.

    image: (S, S, 3) uint8 RGB.  jpeg_quality: for the writer.
    annotations: DensePose-COCO annotation dicts (ids filled in).  rows: SPIN-npz rows, one per annotation.
    maps: label maps for pictures and checks: owner (S, S) person index or -1, I, U, V (S, S),
    zbuf (S, S), occluder (S, S) bool.
    """

    index: int
    file_name: str
    image: np.ndarray
    jpeg_quality: int
    annotations: list[dict]
    rows: list[dict]
    maps: dict[str, np.ndarray] = field(default_factory=dict)


def facing_normals(
    verts: Tensor, faces: Tensor, who: Tensor, face: Tensor, pix: Tensor, size: int, focal: float
) -> Tensor:
    """(N, 3) unit normals, turned towards the camera, at N pixels `pix` (flat indices into a size x size
    image) showing face `face` of person `who`; verts (P, V, 3) camera frame, principal point centred.

    Flat face normals: at a few pixels per face they shade as smoothly as interpolated ones.
    """
    tri = verts[who[:, None], faces[face]]  # (N, 3, 3)
    n = torch.nn.functional.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=1)
    row = torch.div(pix, size, rounding_mode="floor").to(verts.dtype)
    col = (pix % size).to(verts.dtype)
    ray = torch.stack(
        [(col + 0.5 - size / 2) / focal, (row + 0.5 - size / 2) / focal, torch.ones_like(col)], 1
    )
    return torch.where((n * ray).sum(1, keepdim=True) > 0, -n, n)


@dataclass(frozen=True)
class PosedPeople:
    """The people of one image in the camera frame.

    verts: (P, V, 3) metres.  pose: (P, 72) SMPL axis-angle, camera-frame global orientation first.
    cam_t: (P, 3) metres, verts = body(pose, betas) + cam_t.  horizon_row: image row of the horizon.
    """

    verts: Tensor
    pose: np.ndarray
    cam_t: np.ndarray
    horizon_row: float


class SyntheticGenerator:
    """Synthetic DensePose images of the open body (or any Body) at `size` x `size` px."""

    def __init__(
        self, body: Body, size: int, seed: int, split: str, device: str | torch.device = "cpu"
    ) -> None:
        self.size, self.seed, self.split = int(size), int(seed), split
        self.device = torch.device(device)
        self.smpl = make_smplx(body.model_file, body.vertex_ids).to(self.device)
        self.faces = body.faces.to(self.device)
        self.charts = body.charts
        self.landmarks = Landmarks.from_body(body).to(self.device)
        self.coco17 = body.regressors["coco17"].to(self.device)
        self.h36m17 = body.regressors["h36m17"].to(self.device)

    def file_name(self, index: int) -> str:
        return f"{self.split}/{index:06d}.jpg"

    def _pose(self, plan: ScenePlan) -> PosedPeople:
        """Pose the plan's people in the world frame (smplx), then place them and the camera."""
        orient = np.stack([world_orientation(p.yaw) for p in plan.people])
        body_pose = euler_to_axis_angle(np.stack([p.pose.euler for p in plan.people]))[:, 3:]
        t = lambda x: torch.as_tensor(x, dtype=torch.float32, device=self.device)  # noqa: E731
        with torch.no_grad():
            out = self.smpl(
                betas=t(np.stack([p.betas for p in plan.people])),
                body_pose=t(body_pose),
                global_orient=t(Rotation.from_matrix(orient).as_rotvec()),
                transl=torch.zeros(len(plan.people), 3, device=self.device),
            )
        verts_w = out.vertices
        lo, hi = verts_w.amin(1).cpu().double().numpy(), verts_w.amax(1).cpu().double().numpy()
        joints = out.joints.cpu().double().numpy()
        placement = place(plan, lo, hi, joints[:, HEAD_JOINT], joints[:, 0])
        rotation, offsets = placement.rotation, placement.offsets
        verts = (verts_w + t(offsets)[:, None]) @ t(rotation).T
        # smplx turns a body about its root joint J0: X_cam = R (X_world + d) holds with the camera-frame
        # orientation R R_world and the translation R (J0 + d) - J0.
        root = joints[:, 0]
        return PosedPeople(
            verts=verts,
            pose=np.concatenate([Rotation.from_matrix(rotation @ orient).as_rotvec(), body_pose], 1),
            cam_t=(root + offsets) @ rotation.T - root,
            horizon_row=placement.horizon_row,
        )

    def _label_maps(self, verts: Tensor, focal: float) -> tuple[Fragments, dict[str, Tensor], Tensor]:
        """Rasterize the people together: the visible surface's fragments (1, S, S), the label maps
        (owner: person index or -1, I, U, V, zbuf; each (S, S)) and each person's pixel count alone (P,)."""
        size = self.size
        camera = PerspectiveCamera.for_crop(focal, size, verts.shape[0], device=self.device)
        frags = rasterize(camera.to_screen(verts), self.faces, (size, size), perspective_correct=True)
        zmin, owner = frags.zbuf.min(0)
        owner = torch.where(torch.isfinite(zmin), owner, -1)
        pick = owner.clamp(min=0)[None]
        scene = Fragments(
            face_idx=frags.face_idx.gather(0, pick),
            bary=frags.bary.gather(0, pick[..., None].expand(1, size, size, 3)),
            zbuf=zmin[None],
        )
        part, u, v = render_iuv(scene, self.charts)
        maps = {"owner": owner, "I": part[0], "U": u[0], "V": v[0], "zbuf": zmin}
        return scene, maps, frags.mask.sum((1, 2))

    def sample(self, index: int) -> SyntheticSample:
        """Image `index` and its annotations."""
        rng = image_rng(self.seed, self.split, index)
        plan = sample_plan(rng, self.size)
        people = self._pose(plan)
        scene, maps, solo = self._label_maps(people.verts, plan.focal)
        outfits = [sample_outfit(rng) for _ in plan.people]
        lights = sample_lights(rng)
        people_rgb = self._shade(people.verts, scene, maps, outfits, lights, plan.focal, index)

        np_maps = {k: t.cpu().numpy() for k, t in maps.items()}
        fg = np_maps["owner"] >= 0
        image = background(rng, self.size, people.horizon_row)
        image[fg] = people_rgb[fg]
        main = np_maps["owner"] == 0
        occ_rgb, occ = occluders(rng, self.size, ann.mask_box(main) if main.any() else None)
        image[occ] = occ_rgb[occ]
        np_maps["occluder"] = occ
        if rng.random() < 0.5:
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.7))
        quality = int(rng.integers(*JPEG_QUALITY))
        annotations, rows = self._annotate(rng, index, plan, people, np_maps, solo.cpu().numpy())
        return SyntheticSample(
            index=index,
            file_name=self.file_name(index),
            image=image,
            jpeg_quality=quality,
            annotations=annotations,
            rows=rows,
            maps=np_maps,
        )

    def _shade(
        self,
        verts: Tensor,
        scene: Fragments,
        maps: dict[str, Tensor],
        outfits: list[Outfit],
        lights: Lights,
        focal: float,
        index: int,
    ) -> np.ndarray:
        """(S, S, 3) uint8 colours of the visible people (undefined on background)."""
        size = self.size
        owner = maps["owner"]
        pix = (owner >= 0).flatten().nonzero().squeeze(1)
        who = owner.flatten()[pix]
        face = scene.face_idx.flatten()[pix]
        n = facing_normals(verts, self.faces, who, face, pix, size, focal)
        marks = self.landmarks
        rest = (marks.template[self.faces[face]] * scene.bary.reshape(-1, 3)[pix, :, None]).sum(1)
        as_tensor = lambda x: torch.as_tensor(np.stack(x), dtype=verts.dtype, device=verts.device)  # noqa: E731
        cuts = as_tensor([o.cuts for o in outfits])  # (P, len(CUTS))
        part = maps["I"].flatten()[pix]
        material = as_tensor([o.materials for o in outfits])[
            who, material_index(marks, part, rest, cuts[who])
        ]
        uv = maps["U"].flatten()[pix], maps["V"].flatten()[pix]
        colour = albedo(material, part, *uv, seed=float(index % 997))
        rgb = torch.zeros(size * size, 3, dtype=verts.dtype, device=verts.device)
        rgb[pix] = lambert(colour, n, lights)
        return (rgb * 255.0).round().to(torch.uint8).reshape(size, size, 3).cpu().numpy()

    def _annotate(
        self,
        rng: np.random.Generator,
        index: int,
        plan: ScenePlan,
        people: PosedPeople,
        maps: dict[str, np.ndarray],
        solo: np.ndarray,
    ) -> tuple[list[dict], list[dict]]:
        """DensePose-COCO annotations and SPIN rows of the people visible enough to annotate."""
        size = self.size
        kp3d = torch.einsum("jv,pvc->pjc", self.coco17, people.verts).cpu().double().numpy()
        h36m = torch.einsum("jv,pvc->pjc", self.h36m17, people.verts).cpu().double().numpy()
        cam_k = np.array([[plan.focal, 0, size / 2], [0, plan.focal, size / 2], [0, 0, 1.0]])
        annotations, rows = [], []
        for k, person in enumerate(plan.people):
            visible = (maps["owner"] == k) & ~maps["occluder"]
            area = int(visible.sum())
            if area < MIN_VISIBLE_PIXELS:
                continue
            box = ann.mask_box(visible)
            keypoints = ann.keypoint_labels(
                kp3d[k], plan.focal, size, maps["zbuf"], maps["owner"], maps["occluder"]
            )
            ann_id = (index + 1) * 10 + k
            record = {
                "id": ann_id,
                "image_id": index + 1,
                "category_id": 1,
                "iscrowd": 0,
                "area": area,
                "bbox": [float(c) for c in box],
                "segmentation": ann.encode_rle(visible),
                "keypoints": np.round(keypoints, 2).flatten().tolist(),
                "num_keypoints": int((keypoints[:, 2] > 0).sum()),
            }
            if max(box[2], box[3]) >= ann.MIN_DP_BOX and area >= ann.MIN_DP_VISIBLE * solo[k]:
                r, c = ann.sample_dense_points(rng, visible, maps["I"])
                record.update(ann.dense_fields(r, c, maps["I"], maps["U"], maps["V"], box))
                record["dp_masks"] = ann.dp_masks(maps["I"], visible, box)
            annotations.append(record)
            rows.append(
                {
                    "imgname": self.file_name(index),
                    "center": np.array([box[0] + box[2] / 2, box[1] + box[3] / 2]),
                    "scale": max(box[2], box[3]) / 200.0,
                    "pose": people.pose[k],
                    "shape": person.betas,
                    "S": np.concatenate([h36m[k], np.ones((17, 1))], 1),
                    "part": keypoints,
                    "has_smpl": 1,
                    "cam_K": cam_k,
                    "cam_t": people.cam_t[k],
                    "ann_id": ann_id,
                }
            )
        return annotations, rows

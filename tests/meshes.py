"""Small test meshes shared by the chart and IUV-mapping tests."""

import numpy as np
import trimesh


def sphere_24_parts(subdivisions: int = 3):
    """Unit icosphere cut into DensePose's 24 parts, mirror-symmetric in x (PART_MIRROR pairs).

    A band |x| < 0.3 makes parts 1 (z < 0) and 2; each side cap is a central disk plus 10 sectors.
    """
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    c = v[f].mean(1)
    sector = np.floor((np.arctan2(c[:, 2], c[:, 1]) + np.pi) / (2 * np.pi) * 10).astype(int).clip(0, 9) + 1
    sector[np.hypot(c[:, 1], c[:, 2]) < 0.45] = 0
    part = np.where(c[:, 0] > 0, np.arange(3, 25, 2)[sector], np.arange(4, 25, 2)[sector])
    band = np.abs(c[:, 0]) < 0.3
    part[band] = np.where(c[band, 2] < 0, 1, 2)
    return v, f, part

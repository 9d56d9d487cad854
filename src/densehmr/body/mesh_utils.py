"""Small triangle-mesh utilities used while building body assets (numpy/scipy, offline)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def face_adjacency(faces: np.ndarray) -> sp.csr_matrix:
    """(F, F) boolean adjacency of faces sharing an edge."""
    f = len(faces)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges.sort(axis=1)
    face_of = np.tile(np.arange(f), 3)
    key = edges[:, 0].astype(np.int64) * (faces.max() + 1) + edges[:, 1]
    order = np.argsort(key, kind="stable")
    key, face_of = key[order], face_of[order]
    same = key[1:] == key[:-1]
    a, b = face_of[:-1][same], face_of[1:][same]
    adj = sp.coo_matrix((np.ones(len(a), bool), (a, b)), shape=(f, f))
    return (adj + adj.T).tocsr()


def mirror_map(verts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left/right mirror vertex (x -> -x) by nearest neighbour, and the distance to it (metres)."""
    mirrored = verts * np.array([-1.0, 1.0, 1.0])
    dist, idx = cKDTree(verts).query(mirrored)
    return idx.astype(np.int64), dist


def face_areas(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = (verts[faces[:, k]] for k in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def relabel_islands(faces: np.ndarray, labels: np.ndarray, adjacency: sp.csr_matrix) -> np.ndarray:
    """Make each label one connected piece: smaller islands join their most frequent neighbour label."""
    labels = labels.copy()
    for _ in range(20):
        changed = False
        for lab in np.unique(labels):
            idx = np.flatnonzero(labels == lab)
            sub = adjacency[idx][:, idx]
            n, comp = connected_components(sub, directed=False)
            if n <= 1:
                continue
            keep = np.argmax(np.bincount(comp))
            for c in range(n):
                if c == keep:
                    continue
                island = idx[comp == c]
                neigh = adjacency[island].indices
                neigh_labels = labels[neigh]
                neigh_labels = neigh_labels[neigh_labels != lab]
                if len(neigh_labels):
                    labels[island] = np.bincount(neigh_labels).argmax()
                    changed = True
        if not changed:
            break
    return labels


def farthest_point_sampling(points: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Indices of n points spread by farthest-point sampling (deterministic from `start`)."""
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = start
    dist = np.linalg.norm(points - points[start], axis=1)
    for i in range(1, n):
        chosen[i] = int(np.argmax(dist))
        dist = np.minimum(dist, np.linalg.norm(points - points[chosen[i]], axis=1))
    return chosen

"""How the synthetic people look: skin, hair and clothing, textured through the DensePose (U, V)
charts and lit by a Lambertian model with random directional lights.

Colours are RGB in [0, 1]. Hands, feet and head are chosen by DensePose part group (skin, shoes,
and hair/eyes/skin on the head); torso, arms and legs wear a top and a bottom whose edges (hem,
waist, sleeves, trouser legs, collar) are smooth cuts in the rest pose, so that garment edges do
not follow the part borders that a network is asked to find.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from densehmr.body.assets import Body

MATERIALS = ("skin", "hair", "eyes", "top", "bottom", "shoes")
M = {name: k for k, name in enumerate(MATERIALS)}
PLAIN, STRIPES, CHECKS, MOTTLED = range(4)
# Material row: colour (3), second colour (3), pattern, frequency (cycles per UV unit), angle (rad),
# grain amplitude (relative albedo noise).
MATERIAL_SIZE = 10
# Garment cuts of an outfit, in this order: sleeve (fraction of the arm, shoulder to wrist, the top
# covers), hem and waist (m above the pelvis joint: the top's lower edge, the bottom's upper edge),
# leg (fraction of the leg, hip to ankle, the bottom covers), collar (m: radius of bare skin round
# the neck joint), bald (1: no hair).
CUTS = ("sleeve", "hem", "waist", "leg", "collar", "bald")

_SKIN = np.array([(255, 224, 196), (241, 194, 167), (224, 172, 140), (198, 134, 97), (161, 102, 68),
                  (120, 74, 48), (88, 54, 36), (62, 40, 28)]) / 255.0  # fmt: skip
_HAIR = np.array([(20, 16, 14), (45, 30, 20), (85, 55, 35), (140, 100, 60), (200, 170, 110), (150, 60, 30),
                  (165, 165, 160)]) / 255.0  # fmt: skip
_NEUTRALS = np.array([(20, 20, 22), (235, 235, 230), (120, 120, 125), (30, 40, 80), (60, 80, 120),
                      (170, 150, 110), (90, 60, 40)]) / 255.0  # fmt: skip
_SHOES = np.array([(15, 15, 15), (60, 40, 25), (230, 230, 230), (110, 30, 30), (40, 40, 60)]) / 255.0
# Rest-pose distances (metres) that cut hair and eyes out of the head.
_HAIR_ABOVE_EYES = 0.03
_HAIR_BEHIND_EARS = 0.01
_NAPE_BELOW_EYES = 0.08
_EYE_RADIUS = 0.0085
# DensePose part groups.
_TORSO, _HANDS, _FEET = (1, 2), (3, 4), (5, 6)
_LEGS, _ARMS, _HEAD = tuple(range(7, 15)), tuple(range(15, 23)), (23, 24)


@dataclass(frozen=True)
class Landmarks:
    """Rest-pose (T-pose: y up, facing +z, arms along x) landmarks that place the garment cuts, metres.

    template: (V, 3) rest vertices.  neck: (3,) neck joint.  pelvis_y, hip_y, ankle_y: heights of the
    pelvis, hip and ankle joints.  shoulder_x, wrist_x: |x| of the shoulder and wrist joints.
    eyes: (E, 3) eye vertices (E = 0..2).  eye_y, ear_z: eye height, mean depth of the ears.
    """

    template: Tensor
    neck: Tensor
    pelvis_y: float
    hip_y: float
    ankle_y: float
    shoulder_x: float
    wrist_x: float
    eyes: Tensor
    eye_y: float
    ear_z: float

    @classmethod
    def from_body(cls, body: Body) -> Landmarks:
        t = body.v_template.float()
        j = body.regressors["smpl24"].float() @ t
        ids = body.vertex_ids
        head = t[body.faces[body.charts.face_part >= 23].flatten()]
        eye_list = [t[ids[k]] for k in ("leye", "reye") if k in ids]
        eyes = torch.stack(eye_list) if eye_list else t.new_zeros(0, 3)
        ears = [t[ids[k]] for k in ("lear", "rear") if k in ids]
        return cls(
            template=t,
            neck=j[12],
            pelvis_y=float(j[0, 1]),
            hip_y=float(j[[1, 2], 1].mean()),
            ankle_y=float(j[[7, 8], 1].mean()),
            shoulder_x=float(j[[16, 17], 0].abs().mean()),
            wrist_x=float(j[[20, 21], 0].abs().mean()),
            eyes=eyes,
            eye_y=float(eyes[:, 1].mean()) if len(eyes) else float(head[:, 1].max()) - 0.11,
            ear_z=float(torch.stack(ears)[:, 2].mean()) if ears else float(head[:, 2].mean()),
        )

    def to(self, device: torch.device) -> Landmarks:
        return Landmarks(**{k: v.to(device) if isinstance(v, Tensor) else v for k, v in vars(self).items()})


def material_index(marks: Landmarks, part: Tensor, rest: Tensor, cuts: Tensor) -> Tensor:
    """(N,) index into MATERIALS of N surface points: DensePose part (N,) 1..24, rest-pose position
    (N, 3) and the cuts (N, len(CUTS)) of their person's outfit."""
    sleeve, hem, waist, leg, collar, bald = cuts.unbind(1)
    x, y, z = rest.unbind(1)
    group = lambda parts: torch.isin(part, torch.tensor(parts, device=part.device))  # noqa: E731
    along_arm = (x.abs() - marks.shoulder_x) / (marks.wrist_x - marks.shoulder_x)
    along_leg = (marks.hip_y - y) / (marks.hip_y - marks.ankle_y)
    torso, arms, legs = group(_TORSO), group(_ARMS), group(_LEGS)
    bare_neck = (rest - marks.neck).norm(dim=1) < collar
    top = ((torso | legs) & (y > marks.pelvis_y + hem) & ~bare_neck) | (arms & (along_arm < sleeve))
    bottom = (torso & (y < marks.pelvis_y + waist)) | (legs & (along_leg < leg))
    out = torch.full_like(part, M["skin"])
    out = torch.where(bottom, M["bottom"], out)
    out = torch.where(top, M["top"], out)
    out = torch.where(group(_FEET), M["shoes"], out)
    head = group(_HEAD)
    hair = (
        head
        & (bald < 0.5)
        & (
            (y > marks.eye_y + _HAIR_ABOVE_EYES)
            | ((y > marks.eye_y - _NAPE_BELOW_EYES) & (z < marks.ear_z - _HAIR_BEHIND_EARS))
        )
    )
    out = torch.where(hair, M["hair"], out)
    if len(marks.eyes):
        near_eye = (rest[:, None] - marks.eyes).norm(dim=-1).min(1).values < _EYE_RADIUS
        out = torch.where(head & near_eye, M["eyes"], out)
    return out


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(colour * rng.uniform(1.0 - amount, 1.0 + amount) + rng.normal(0, amount / 3, 3), 0, 1)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _garment_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.4:
        return _jitter(rng, _NEUTRALS[rng.integers(len(_NEUTRALS))], 0.15)
    return _hsv(rng.random(), rng.uniform(0.15, 0.9), rng.uniform(0.2, 0.95))


def _material(
    rng: np.random.Generator, colour: np.ndarray, pattern_probs: tuple[float, ...], grain: float
) -> np.ndarray:
    pattern = rng.choice(4, p=pattern_probs)
    second = _garment_colour(rng) if pattern in (STRIPES, CHECKS) else colour * rng.uniform(0.5, 0.8)
    freq = rng.uniform(3.0, 10.0) if pattern != MOTTLED else rng.uniform(2.0, 5.0)
    return np.concatenate([colour, second, [pattern, freq, rng.uniform(0, np.pi), grain]])


def _pick(
    rng: np.random.Generator, ranges: tuple[tuple[float, float], ...], probs: tuple[float, ...]
) -> float:
    lo, hi = ranges[rng.choice(len(ranges), p=probs)]
    return float(rng.uniform(lo, hi))


@dataclass(frozen=True)
class Outfit:
    """materials: (len(MATERIALS), MATERIAL_SIZE).  cuts: (len(CUTS),) garment edges (see CUTS)."""

    materials: np.ndarray
    cuts: np.ndarray


def sample_outfit(rng: np.random.Generator) -> Outfit:
    """Skin tone, hair, a top (sleeveless to long-sleeved, cropped to long), trousers, capris or
    shorts, shoes."""
    skin_tone = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 0.08)
    table = np.zeros((len(MATERIALS), MATERIAL_SIZE))
    table[M["skin"]] = _material(rng, skin_tone, (1, 0, 0, 0), 0.06)
    table[M["hair"]] = _material(rng, _jitter(rng, _HAIR[rng.integers(len(_HAIR))], 0.15), (0, 0, 0, 1), 0.3)
    table[M["eyes"]] = _material(rng, np.array([0.08, 0.06, 0.05]), (1, 0, 0, 0), 0.0)
    table[M["top"]] = _material(rng, _garment_colour(rng), (0.45, 0.25, 0.1, 0.2), 0.12)
    table[M["bottom"]] = _material(rng, _garment_colour(rng), (0.5, 0.05, 0.1, 0.35), 0.15)
    table[M["shoes"]] = _material(
        rng, _jitter(rng, _SHOES[rng.integers(len(_SHOES))], 0.2), (1, 0, 0, 0), 0.05
    )
    cuts = np.array([
        _pick(rng, ((-1.0, -1.0), (0.15, 0.45), (0.6, 0.8), (0.95, 1.1)), (0.15, 0.45, 0.1, 0.3)),
        _pick(rng, ((-0.14, 0.02), (0.1, 0.2)), (0.9, 0.1)),
        rng.uniform(0.06, 0.14),
        _pick(rng, ((0.15, 0.45), (0.6, 0.8), (0.95, 1.05)), (0.3, 0.1, 0.6)),
        rng.uniform(0.07, 0.13),
        float(rng.random() < 0.08),
    ])  # fmt: skip
    return Outfit(materials=table, cuts=cuts)


@dataclass(frozen=True)
class Lights:
    """Ambient colour (3,); directional lights: directions (L, 3) towards the lights, camera frame,
    unit; colours (L, 3)."""

    ambient: np.ndarray
    directions: np.ndarray
    colours: np.ndarray


def sample_lights(rng: np.random.Generator) -> Lights:
    """Ambient plus one or two lights from the camera's side of the scene, mostly from above."""
    count = 1 + int(rng.random() < 0.5)
    d = np.stack([rng.uniform(-1, 1, count), rng.uniform(-1.3, 0.3, count), -rng.uniform(0.4, 1.2, count)], 1)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    warmth = rng.uniform(-0.12, 0.12, (count, 1)) * np.array([1.0, 0.0, -1.0])
    colours = rng.uniform(0.45, 0.85, (count, 1)) * (1.0 + warmth)
    if count == 2:
        colours[1] *= 0.5
    ambient = rng.uniform(0.25, 0.5) * (1.0 + rng.uniform(-0.06, 0.06, 3))
    return Lights(ambient=ambient, directions=d, colours=colours)


def value_noise(x: Tensor, y: Tensor, seed: float) -> Tensor:
    """Smooth noise in [0, 1] at (x, y) (any shape, lattice spacing 1): hashed lattice values,
    smoothstep-interpolated."""
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)

    def h(i: Tensor, j: Tensor) -> Tensor:
        return torch.frac(torch.sin(i * 127.1 + j * 311.7 + seed * 74.7) * 43758.5453).abs()

    top = h(x0, y0) * (1 - fx) + h(x0 + 1, y0) * fx
    bottom = h(x0, y0 + 1) * (1 - fx) + h(x0 + 1, y0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def albedo(material: Tensor, part: Tensor, u: Tensor, v: Tensor, seed: float) -> Tensor:
    """(N, 3) surface colour of N pixels from their materials (N, MATERIAL_SIZE), parts (N,) and (U, V)."""
    base, second = material[:, 0:3], material[:, 3:6]
    pattern, freq, angle, grain = (
        material[:, 6].round().long(),
        material[:, 7],
        material[:, 8],
        material[:, 9],
    )
    along = u * torch.cos(angle) + v * torch.sin(angle)
    stripes = 0.5 + 0.5 * torch.tanh(6.0 * torch.sin(2 * torch.pi * freq * along))
    waves = torch.sin(2 * torch.pi * freq * u) * torch.sin(2 * torch.pi * freq * v)
    checks = 0.5 + 0.5 * torch.tanh(6.0 * waves)
    # Offsetting by the part keeps the noise of neighbouring charts unrelated.
    shift = part.to(u.dtype) * 7.31
    mottled = value_noise(u * freq + shift, v * freq - shift, seed)
    mix = torch.zeros_like(u)
    mix = torch.where(pattern == STRIPES, stripes, mix)
    mix = torch.where(pattern == CHECKS, checks, mix)
    mix = torch.where(pattern == MOTTLED, mottled, mix)
    colour = base * (1 - mix[:, None]) + second * mix[:, None]
    fine = value_noise(u * 40.0 + shift, v * 40.0, seed + 1.0)
    return (colour * (1.0 + grain[:, None] * (fine[:, None] - 0.5) * 2.0)).clamp(0.0, 1.0)


def lambert(colour: Tensor, normal: Tensor, lights: Lights) -> Tensor:
    """(N, 3) shaded colour: albedo (N, 3) times (ambient + sum of lights' colour * max(0, n . l));
    normal (N, 3) unit, camera frame, facing the camera."""
    d = torch.as_tensor(lights.directions, dtype=colour.dtype, device=colour.device)
    c = torch.as_tensor(lights.colours, dtype=colour.dtype, device=colour.device)
    a = torch.as_tensor(lights.ambient, dtype=colour.dtype, device=colour.device)
    irradiance = a + (normal @ d.T).clamp(min=0.0) @ c
    return (colour * irradiance).clamp(0.0, 1.0)

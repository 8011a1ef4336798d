"""SynthFER's procedural face model: sampling identities, expressions (AU-like), nuisances, and drawing.

Pure numpy + Pillow (no torch) so worker processes start fast. Everything random comes from a
``numpy.random.Generator`` passed in, so a face is a pure function of its seeds::

    python -c "import numpy as np; from ifer.data.synthfer_render import *; r=np.random.default_rng(0); \\
i=sample_identity(r); render(i, expression_aus('happy', 1.0, r), sample_nuisance(r), 128).save('/tmp/face.png')"

Geometry lives in face-local units (canvas width = 1, face centre = origin, +y down). Each point has a
depth on a pseudo-sphere; yaw shifts it by ``depth * sin(yaw)``, which reads as a head turn without 3D.
The canvas is drawn at 2-4x the target resolution and LANCZOS-downsampled, which anti-aliases every edge.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

# Action-unit-like parameters (FACS number in the comment), each in [0, 1].
AU_NAMES: tuple[str, ...] = (
    "brow_inner_raise",    # AU1
    "brow_outer_raise",    # AU2
    "brow_lower",          # AU4
    "upper_lid_raise",     # AU5
    "cheek_raise",         # AU6
    "lid_tighten",         # AU7
    "nose_wrinkle",        # AU9
    "upper_lip_raise",     # AU10
    "lip_corner_pull",     # AU12
    "lip_corner_depress",  # AU15
    "lip_stretch",         # AU20
    "lip_press",           # AU24
    "jaw_drop",            # AU26
)

# Prototypes at full intensity, after EMFACS-style descriptions of the basic emotions.
PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"cheek_raise": 0.8, "lip_corner_pull": 1.0, "lid_tighten": 0.2, "jaw_drop": 0.25},
    "sad": {"brow_inner_raise": 0.9, "brow_lower": 0.45, "lip_corner_depress": 1.0, "lid_tighten": 0.35},
    "surprise": {"brow_inner_raise": 0.9, "brow_outer_raise": 1.0, "upper_lid_raise": 1.0, "jaw_drop": 0.9},
    "fear": {"brow_inner_raise": 1.0, "brow_outer_raise": 0.5, "brow_lower": 0.6, "upper_lid_raise": 0.9,
             "lip_stretch": 1.0, "jaw_drop": 0.35},
    "disgust": {"nose_wrinkle": 1.0, "upper_lip_raise": 1.0, "brow_lower": 0.5, "lip_corner_depress": 0.4,
                "lid_tighten": 0.3},
    "anger": {"brow_lower": 1.0, "lid_tighten": 0.8, "upper_lid_raise": 0.3, "lip_press": 1.0},
}

SKIN_TONES = np.array([(255, 224, 196), (241, 194, 150), (224, 172, 125), (198, 134, 86),
                       (161, 102, 62), (112, 70, 42)], dtype=float)
HAIR_COLOURS = np.array([(20, 16, 14), (60, 40, 25), (110, 75, 40), (180, 140, 80), (200, 190, 170),
                         (140, 50, 20)], dtype=float)
HAIR_STYLES = ("bald", "short", "long", "bun", "curly")
BACKGROUNDS = ("flat", "gradient", "stripes", "blobs")
OCCLUSIONS = ("none", "bar", "hand", "patch")


def _rgb(c: Any) -> tuple[int, int, int]:
    c = np.clip(np.asarray(c, dtype=float), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _mix(a: Any, b: Any, t: float) -> tuple[int, int, int]:
    return _rgb((1 - t) * np.asarray(a, float) + t * np.asarray(b, float))


def sample_identity(rng: np.random.Generator) -> dict[str, Any]:
    """Identity factors: fixed for every image of one person."""
    tone = int(rng.integers(len(SKIN_TONES)))
    hair = int(rng.integers(len(HAIR_COLOURS)))
    return {
        "skin_tone": tone,
        "skin": _rgb(SKIN_TONES[tone] + rng.normal(0, 8, 3)),
        "face_w": float(rng.uniform(0.25, 0.31)),
        "face_h": float(rng.uniform(0.33, 0.39)),
        "jaw": float(rng.uniform(0.55, 0.95)),
        "eye_spacing": float(rng.uniform(0.085, 0.125)),
        "eye_y": float(rng.uniform(-0.05, -0.01)),
        "eye_w": float(rng.uniform(0.042, 0.058)),
        "eye_h": float(rng.uniform(0.020, 0.028)),
        "iris": _rgb(rng.choice([(60, 40, 20), (40, 90, 140), (70, 110, 60), (30, 25, 20)], axis=0)),
        "brow_gap": float(rng.uniform(0.045, 0.065)),
        "brow_thick": float(rng.uniform(0.010, 0.020)),
        "nose_len": float(rng.uniform(0.07, 0.10)),
        "nose_w": float(rng.uniform(0.024, 0.038)),
        "mouth_y": float(rng.uniform(0.15, 0.185)),
        "mouth_w": float(rng.uniform(0.065, 0.09)),
        "lip_thick": float(rng.uniform(0.010, 0.018)),
        "lip": _rgb(np.array([170, 80, 80]) + rng.normal(0, 15, 3)),
        "hair_style": HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))],
        "hair_colour": hair,
        "hair": _rgb(HAIR_COLOURS[hair] + rng.normal(0, 6, 3)),
        "shirt": _rgb(rng.uniform(30, 230, 3)),
        "glasses": bool(rng.random() < 0.25),
        "hat": bool(rng.random() < 0.12),
        "earrings": bool(rng.random() < 0.2),
        "beard": bool(rng.random() < 0.15),
        "moustache": bool(rng.random() < 0.15),
        # Idiosyncratic resting face: why a model must see many identities to generalise.
        "rest_brow": float(rng.normal(0, 0.006)),
        "rest_mouth": float(rng.normal(0, 0.006)),
        "rest_eye": float(rng.normal(0, 0.12)),
    }


def expression_aus(expression: str, intensity: float, rng: np.random.Generator, jitter: float = 0.04) -> np.ndarray:
    """AU vector = intensity x prototype + small jitter, clipped to [0, 1]. Low intensity ~ neutral."""
    proto = np.array([PROTOTYPES[expression].get(n, 0.0) for n in AU_NAMES])
    return np.clip(intensity * proto + rng.normal(0, jitter, len(AU_NAMES)), 0.0, 1.0)


def sample_nuisance(rng: np.random.Generator, occlusion_p: float = 0.2, strength: float = 1.0) -> dict[str, Any]:
    """Per-image nuisance factors: pose, scale, lighting, background, noise, occlusion.

    ``strength`` in [0, 1] shrinks pose, scale, lighting, noise and background clutter towards a frontal,
    evenly lit face on a flat background (1 = the full ranges; 0 = none). The random draws are the same
    for every strength, so only the amplitudes change.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"nuisance strength must be in [0, 1], got {strength}")
    occl = "none"
    if rng.random() < occlusion_p:
        occl = OCCLUSIONS[1 + int(rng.integers(len(OCCLUSIONS) - 1))]
    nui = {
        "yaw": float(rng.uniform(-0.45, 0.45)),
        "roll": float(rng.uniform(-12, 12)),
        "tx": float(rng.uniform(-0.06, 0.06)),
        "ty": float(rng.uniform(-0.05, 0.05)),
        "scale": float(rng.uniform(0.85, 1.1)),
        "light_angle": float(rng.uniform(0, 2 * math.pi)),
        "light_strength": float(rng.uniform(0.0, 0.35)),
        "ambient": float(rng.uniform(0.75, 1.1)),
        "background": BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        "bg_a": _rgb(rng.uniform(0, 255, 3)),
        "bg_b": _rgb(rng.uniform(0, 255, 3)),
        "bg_seed": int(rng.integers(2**31)),
        "noise": float(rng.uniform(0.0, 0.03)),
        "occlusion": occl,
        "occ_x": float(rng.uniform(-0.15, 0.15)),
        "occ_y": float(rng.uniform(-0.08, 0.2)),
        "occ_angle": float(rng.uniform(-30, 30)),
        "occ_colour": _rgb(rng.uniform(0, 255, 3)),
    }
    if strength < 1.0:  # exact no-op at 1.0, so the default bytes never change
        for k in ("yaw", "roll", "tx", "ty", "light_strength", "noise"):
            nui[k] *= strength
        nui["scale"] = 1.0 + (nui["scale"] - 1.0) * strength
        nui["ambient"] = 1.0 + (nui["ambient"] - 1.0) * strength
        nui["bg_b"] = _mix(nui["bg_a"], nui["bg_b"], strength)  # clutter contrast -> 0
    return nui


def _bezier(p0: tuple[float, float], mid: tuple[float, float], p2: tuple[float, float], n: int = 8) -> np.ndarray:
    """Quadratic Bezier from p0 to p2 that passes through ``mid`` at t = 0.5."""
    p0a, p2a, mida = np.array(p0), np.array(p2), np.array(mid)
    c = 2 * mida - 0.5 * (p0a + p2a)
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0a + 2 * (1 - t) * t * c + t**2 * p2a


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24, a0: float = 0.0, a1: float = 2 * math.pi) -> np.ndarray:
    a = np.linspace(a0, a1, n, endpoint=(a1 - a0) < 2 * math.pi - 1e-9)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


class _Projector:
    """Face-local points (+ pseudo-sphere depth) -> canvas pixels under yaw, roll, scale, translation."""

    def __init__(self, ident: dict[str, Any], nui: dict[str, Any], size: int) -> None:
        self.w, self.h = ident["face_w"], ident["face_h"]
        self.sin_yaw, self.cos_yaw = math.sin(nui["yaw"]), math.cos(nui["yaw"])
        r = math.radians(nui["roll"])
        self.rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
        self.k = nui["scale"] * size
        self.centre = np.array([0.5 + nui["tx"], 0.47 + nui["ty"]]) * size

    def __call__(self, pts: np.ndarray, dz: float = 0.0, surface: bool = True) -> list[tuple[float, float]]:
        pts = np.asarray(pts, dtype=float).reshape(-1, 2)
        x, y = pts[:, 0], pts[:, 1]
        if surface:
            z = self.w * np.sqrt(np.clip(1 - (x / self.w) ** 2 - (y / (1.1 * self.h)) ** 2, 0, 1)) + dz
        else:
            z = np.full_like(x, dz)
        xy = np.stack([x * self.cos_yaw + z * self.sin_yaw, y], axis=1) @ self.rot.T
        out = xy * self.k + self.centre
        return [tuple(p) for p in out.tolist()]


def _draw_background(draw: ImageDraw.ImageDraw, nui: dict[str, Any], size: int) -> None:
    a, b = nui["bg_a"], nui["bg_b"]
    kind = nui["background"]
    draw.rectangle([0, 0, size, size], fill=a)
    if kind == "gradient":
        steps = 16
        for i in range(steps):
            draw.rectangle([0, i * size / steps, size, (i + 1) * size / steps + 1], fill=_mix(a, b, i / (steps - 1)))
    elif kind == "stripes":
        w = size / 10
        for i in range(0, 10, 2):
            draw.rectangle([i * w, 0, (i + 1) * w, size], fill=b)
    elif kind == "blobs":
        r = np.random.default_rng(nui["bg_seed"])
        for _ in range(6):
            cx, cy, rad = r.uniform(0, size), r.uniform(0, size), r.uniform(0.05, 0.2) * size
            draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=_mix(a, b, r.uniform(0.4, 1)))


def _draw_face(draw: ImageDraw.ImageDraw, ident: dict[str, Any], aus: np.ndarray, P: _Projector, size: int) -> None:
    au = dict(zip(AU_NAMES, aus.tolist()))
    W, H = ident["face_w"], ident["face_h"]
    skin, hair, line = ident["skin"], ident["hair"], _mix(ident["skin"], (40, 20, 10), 0.55)
    px = max(1.0, size / 256)  # stroke unit: ~1 px at 64 px output

    # Body, back hair, ears: behind the head.
    draw.ellipse([0.5 * size - 0.45 * size, 0.86 * size, 0.5 * size + 0.45 * size, 1.5 * size], fill=ident["shirt"])
    draw.polygon(P(np.array([[-0.4 * W, 0.5 * H], [0.4 * W, 0.5 * H], [0.45 * W, 1.45 * H], [-0.45 * W, 1.45 * H]]),
                   surface=False), fill=_mix(skin, (0, 0, 0), 0.12))
    if ident["hair_style"] == "long":
        draw.polygon(P(np.concatenate([_ellipse(0, -0.1 * H, 1.25 * W, 1.05 * H, 20, math.pi, 2 * math.pi),
                                       [[1.3 * W, 1.2 * H], [-1.3 * W, 1.2 * H]]]), dz=-0.3 * W, surface=False),
                     fill=hair)
    for s in (-1, 1):
        ear = P(_ellipse(s * W, ident["eye_y"] + 0.02, 0.035, 0.055, 12), dz=-0.2 * W, surface=False)
        draw.polygon(ear, fill=_mix(skin, (0, 0, 0), 0.08))
        if ident["earrings"]:
            (ex, ey), = P(np.array([[s * W, ident["eye_y"] + 0.075]]), dz=-0.2 * W, surface=False)
            r = 0.012 * P.k
            draw.ellipse([ex - r, ey - r, ex + r, ey + r], fill=(230, 200, 60))

    # Head outline: upper half-ellipse, lower half narrowed towards the chin by `jaw`.
    top = _ellipse(0, 0, W, H, 20, math.pi, 2 * math.pi)
    a = np.linspace(0, math.pi, 20)
    narrow = 1 - (1 - ident["jaw"]) * np.sin(a) ** 2
    bottom = np.stack([W * np.cos(a) * narrow, 1.05 * H * np.sin(a)], axis=1)
    draw.polygon(P(np.concatenate([top, bottom]), surface=False), fill=skin)

    if ident["beard"]:
        a = np.linspace(0.15, math.pi - 0.15, 14)
        outer = np.stack([W * np.cos(a) * (1 - (1 - ident["jaw"]) * np.sin(a) ** 2), 1.05 * H * np.sin(a)], axis=1)
        # Inner edge runs left -> right so the polygon closes without crossing itself.
        inner = _bezier((-0.95 * W, 0.15 * H), (0, ident["mouth_y"] + 0.05 + 0.05 * au["jaw_drop"]), (0.95 * W, 0.15 * H))
        draw.polygon(P(np.concatenate([outer, inner])), fill=hair)

    # Hair cap (and hat) over the top of the head.
    style = ident["hair_style"]
    if style != "bald":
        cap = np.concatenate([
            _ellipse(0, 0, 1.07 * W, 1.05 * H, 16, math.pi, 2 * math.pi),
            _bezier((1.0 * W, -0.15 * H), (0, -0.62 * H), (-1.0 * W, -0.15 * H), 10),
        ])
        draw.polygon(P(cap, surface=False), fill=hair)
        if style == "bun":
            draw.polygon(P(_ellipse(0, -1.12 * H, 0.35 * W, 0.2 * H, 16), surface=False), fill=hair)
        elif style == "curly":
            for i in range(7):
                ang = math.pi + (i + 0.5) * math.pi / 7
                draw.polygon(P(_ellipse(1.02 * W * math.cos(ang), 1.0 * H * math.sin(ang), 0.1 * W, 0.1 * W, 10),
                               surface=False), fill=hair)
    if ident["hat"]:
        brim = np.array([[-1.2 * W, -0.55 * H], [1.2 * W, -0.55 * H], [1.2 * W, -0.68 * H], [-1.2 * W, -0.68 * H]])
        crown = np.concatenate([[[0.85 * W, -0.66 * H]], _ellipse(0, -0.66 * H, 0.85 * W, 0.55 * H, 12, 0, -math.pi)])
        colour = _mix(ident["shirt"], (0, 0, 0), 0.35)
        draw.polygon(P(crown, surface=False), fill=colour)
        draw.polygon(P(brim, surface=False), fill=colour)

    # Forehead wrinkles (AU1/AU2) and glabella furrows (AU4): fade in with intensity.
    raise_ = max(au["brow_inner_raise"], au["brow_outer_raise"])
    if raise_ > 0.3:
        c = _mix(skin, line, min(1.0, (raise_ - 0.3) * 1.6))
        for j in range(3):
            y = -0.42 * H + j * 0.035
            draw.line(P(_bezier((-0.45 * W, y + 0.01), (0, y - 0.008), (0.45 * W, y + 0.01), 8)), fill=c, width=int(2 * px))
    if au["brow_lower"] > 0.3:
        c = _mix(skin, line, min(1.0, (au["brow_lower"] - 0.3) * 1.6))
        for s in (-1, 1):
            x = s * 0.012
            draw.line(P(np.array([[x, ident["eye_y"] - 0.06], [x * 1.3, ident["eye_y"] - 0.02]])), fill=c, width=int(2 * px))

    # Eyes: openness from AU5 (up), AU7 and AU6 (down); iris clipped to the opening.
    ey, ew = ident["eye_y"], ident["eye_w"]
    open_ = ident["eye_h"] * float(np.clip(1 + ident["rest_eye"] + 0.9 * au["upper_lid_raise"]
                                           - 0.55 * au["lid_tighten"] - 0.35 * au["cheek_raise"], 0.15, 2.2))
    for s in (-1, 1):
        ex = s * ident["eye_spacing"]
        draw.polygon(P(_ellipse(ex, ey, ew, open_, 20)), fill=(245, 245, 240))
        ir = min(0.6 * ew, 0.018)
        iry = min(ir, open_ * 0.95)
        draw.polygon(P(_ellipse(ex, ey, ir, iry, 14), dz=0.004), fill=ident["iris"])
        pr = 0.45 * ir
        draw.polygon(P(_ellipse(ex, ey, pr, min(pr, iry), 10), dz=0.005), fill=(10, 10, 10))
        draw.line(P(_ellipse(ex, ey, ew, open_, 12, math.pi, 2 * math.pi)), fill=line, width=int(2.5 * px))
        if au["cheek_raise"] > 0.25:  # raised cheeks push a bulge under the eye
            c = _mix(skin, line, min(1.0, (au["cheek_raise"] - 0.25) * 1.5))
            draw.line(P(_bezier((ex - ew, ey + open_ + 0.012), (ex, ey + open_ + 0.03), (ex + ew, ey + open_ + 0.012), 8)),
                      fill=c, width=int(2 * px))

    # Brows: inner end up with AU1, outer end up with AU2, both down and inward with AU4.
    by = ey - ident["brow_gap"] + ident["rest_brow"]
    t = ident["brow_thick"]
    for s in (-1, 1):
        inner = (s * (ident["eye_spacing"] - 0.9 * ew + 0.012 * au["brow_lower"]),
                 by - 0.035 * au["brow_inner_raise"] + 0.028 * au["brow_lower"])
        outer = (s * (ident["eye_spacing"] + 1.1 * ew), by - 0.035 * au["brow_outer_raise"] + 0.01 * au["brow_lower"] + 0.008)
        mid = (0.5 * (inner[0] + outer[0]), min(inner[1], outer[1]) - 0.012 - 0.01 * au["brow_outer_raise"])
        upper = _bezier(inner, mid, outer, 8)
        lower = upper[::-1] + np.array([0, t])
        draw.polygon(P(np.concatenate([upper, lower])), fill=_mix(hair, (0, 0, 0), 0.3))

    # Nose: bridge, nostrils (flare with AU9), wrinkles (AU9).
    nl, nw = ident["nose_len"], ident["nose_w"] * (1 + 0.35 * au["nose_wrinkle"])
    tip_y = ey + nl - 0.01 * au["nose_wrinkle"]
    draw.line(P(np.array([[0.006, ey + 0.01], [0.012, tip_y - 0.01]]), dz=0.03), fill=line, width=int(2 * px))
    draw.line(P(_bezier((-nw, tip_y), (0, tip_y + 0.012), (nw, tip_y), 8), dz=0.04), fill=line, width=int(2 * px))
    for s in (-1, 1):
        draw.polygon(P(_ellipse(s * 0.55 * nw, tip_y + 0.002, 0.3 * nw, 0.15 * nw, 10), dz=0.035),
                     fill=_mix(skin, (20, 10, 5), 0.6))
    if au["nose_wrinkle"] > 0.3:
        c = _mix(skin, line, min(1.0, (au["nose_wrinkle"] - 0.3) * 1.6))
        for j in range(3):
            y = ey + 0.012 + j * 0.011
            draw.line(P(np.array([[-0.018, y], [0.018, y]]), dz=0.03), fill=c, width=int(2 * px))

    # Mouth. Corners: up with AU12, down with AU15; width: AU20/AU12 wider, AU24 narrower.
    my = ident["mouth_y"]
    mw = ident["mouth_w"] * (1 + 0.3 * au["lip_stretch"] + 0.2 * au["lip_corner_pull"] - 0.18 * au["lip_press"])
    cy = my + ident["rest_mouth"] - 0.04 * au["lip_corner_pull"] + 0.035 * au["lip_corner_depress"] + 0.008 * au["lip_stretch"]
    thick = ident["lip_thick"] * (1 - 0.7 * au["lip_press"])
    upper_y = my - 0.024 * au["upper_lip_raise"]
    opening = 0.075 * au["jaw_drop"] + 0.02 * au["upper_lip_raise"] + 0.012 * au["lip_stretch"]
    lower_y = my + opening
    L, R = (-mw, cy), (mw, cy)

    # Nasolabial folds deepen with AU12 (smile) and AU10 (disgust).
    fold = max(au["lip_corner_pull"], au["upper_lip_raise"])
    if fold > 0.3:
        c = _mix(skin, line, min(1.0, (fold - 0.3) * 1.5))
        for s in (-1, 1):
            draw.line(P(_bezier((s * 1.4 * nw, tip_y - 0.005), (s * (mw + 0.02), 0.5 * (tip_y + cy)), (s * (mw + 0.012), cy + 0.01), 8)),
                      fill=c, width=int(2 * px))
    if ident["moustache"]:
        m = np.concatenate([_bezier((-mw - 0.005, upper_y - thick + 0.004), (0, upper_y - thick - 0.004), (mw + 0.005, upper_y - thick + 0.004), 8),
                            _bezier((mw + 0.005, upper_y - thick - 0.012), (0, upper_y - thick - 0.025), (-mw - 0.005, upper_y - thick - 0.012), 8)])
        draw.polygon(P(m), fill=hair)
    if opening > 0.004:
        inner_top = _bezier(L, (0, upper_y), R, 10)
        inner_bot = _bezier(R, (0, lower_y), L, 10)
        draw.polygon(P(np.concatenate([inner_top, inner_bot])), fill=(60, 15, 20))
        if au["lip_corner_pull"] > 0.4 or au["upper_lip_raise"] > 0.4:
            teeth_h = min(opening * 0.5, 0.014)
            teeth = np.concatenate([inner_top, _bezier(R, (0, upper_y + teeth_h), L, 10)])
            draw.polygon(P(teeth), fill=(240, 240, 230))
    upper_lip = np.concatenate([_bezier(L, (0, upper_y - thick), R, 10), _bezier(R, (0, upper_y), L, 10)])
    lower_lip = np.concatenate([_bezier(L, (0, lower_y), R, 10), _bezier(R, (0, lower_y + 1.2 * thick), L, 10)])
    draw.polygon(P(upper_lip), fill=ident["lip"])
    draw.polygon(P(lower_lip), fill=_mix(ident["lip"], (255, 255, 255), 0.1))

    if ident["glasses"]:
        frame = (25, 25, 30)
        for s in (-1, 1):
            rim = _ellipse(s * ident["eye_spacing"], ey, 1.45 * ew, 1.2 * ew, 20)
            draw.line(P(np.vstack([rim, rim[:1]]), dz=0.02), fill=frame, width=int(3 * px))
        draw.line(P(np.array([[-ident["eye_spacing"] + 1.45 * ew, ey], [ident["eye_spacing"] - 1.45 * ew, ey]]), dz=0.035),
                  fill=frame, width=int(3 * px))


def _draw_occlusion(draw: ImageDraw.ImageDraw, ident: dict[str, Any], nui: dict[str, Any], P: _Projector) -> None:
    kind = nui["occlusion"]
    if kind == "none":
        return
    ox, oy = nui["occ_x"], nui["occ_y"]
    ang = math.radians(nui["occ_angle"])
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    if kind == "bar":
        pts = np.array([[-0.22, -0.025], [0.22, -0.025], [0.22, 0.025], [-0.22, 0.025]]) @ rot.T + [ox, oy]
        draw.polygon(P(pts, dz=0.3, surface=False), fill=_mix(nui["occ_colour"], (0, 0, 0), 0.5))
    elif kind == "patch":
        pts = np.array([[-0.06, -0.05], [0.06, -0.05], [0.06, 0.05], [-0.06, 0.05]]) @ rot.T + [ox, oy]
        draw.polygon(P(pts, dz=0.3, surface=False), fill=nui["occ_colour"])
    else:  # hand: palm + four fingers, in a skin tone that is not the face's
        tone = _mix(SKIN_TONES[(ident["skin_tone"] + 2) % len(SKIN_TONES)], (0, 0, 0), 0.1)
        draw.polygon(P(_ellipse(ox, oy + 0.08, 0.07, 0.06, 16) @ rot.T, dz=0.3, surface=False), fill=tone)
        for f in range(4):
            fx = ox - 0.05 + f * 0.033
            finger = np.array([[fx - 0.013, oy + 0.06], [fx + 0.013, oy + 0.06], [fx + 0.013, oy - 0.04], [fx - 0.013, oy - 0.04]])
            draw.polygon(P(finger @ rot.T, dz=0.3, surface=False), fill=tone)


def supersample_factor(res: int) -> int:
    """2-4x, keeping the drawing canvas at most 512 px (speed)."""
    return max(2, min(4, 512 // res))


def render(ident: dict[str, Any], aus: np.ndarray, nui: dict[str, Any], res: int, noise_rng: np.random.Generator | None = None) -> Image.Image:
    """Draw one face at ``res`` x ``res`` (RGB). Deterministic given its inputs and ``noise_rng`` state."""
    size = res * supersample_factor(res)
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    _draw_background(draw, nui, size)
    P = _Projector(ident, nui, size)
    _draw_face(draw, ident, aus, P, size)
    _draw_occlusion(draw, ident, nui, P)
    small = img.resize((res, res), Image.Resampling.LANCZOS)

    # Lighting: a directional linear gradient times an ambient level; then sensor noise.
    arr = np.asarray(small, dtype=np.float32)
    g = np.linspace(-1, 1, res, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)
    shade = nui["ambient"] + nui["light_strength"] * (math.cos(nui["light_angle"]) * gx + math.sin(nui["light_angle"]) * gy)
    arr = arr * shade[..., None]
    if nui["noise"] > 0:
        rng = noise_rng or np.random.default_rng(nui["bg_seed"])
        arr = arr + rng.normal(0, 255 * nui["noise"], arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))

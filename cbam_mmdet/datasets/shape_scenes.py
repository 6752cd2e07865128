"""Procedural detection scenes: filled shapes to find among hollow look-alikes and clutter.

Scene ``index`` of ``seed`` comes from ``numpy.random.default_rng([seed, index])`` alone.
Targets: filled circles, squares, triangles; distractors (never labelled): the same shapes
hollow, and plus signs; clutter: a gradient, noise, lines, dots. A target's box is that of
the pixels its shape covers at least half.
"""
import math

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle')
DISTRACTORS = ('ring', 'square_outline', 'triangle_outline', 'plus')
PALETTE = [(220, 20, 60), (0, 130, 200), (60, 180, 75)]  # for visualisation only

_AA = cv2.LINE_AA
_SHIFT = 4  # cv2 sub-pixel bits: coordinates are drawn at 1/16 pixel
_ONE = 1 << _SHIFT


def _rand_colour(rng):
    """A saturated colour of any hue (RGB uint8), so hue says nothing about the class."""
    hsv = np.array([[[rng.integers(0, 180), rng.integers(170, 256),
                      rng.integers(150, 256)]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _background(rng, height, width, noise):
    """A gradient between two muted colours plus Gaussian pixel noise (float RGB)."""
    c0 = rng.uniform(40, 150, size=3)
    c1 = rng.uniform(40, 150, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xs * math.cos(angle) + ys * math.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    img += rng.normal(0, noise, size=img.shape)
    return img


def _polygon(cx, cy, radius, sides, angle):
    theta = angle + np.arange(sides) * 2 * math.pi / sides
    return np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], axis=1)


def _shape_geometry(kind, cx, cy, size, angle):
    """(polygon points or None, circle radius or None) of a shape of box size ~``size``."""
    if kind in ('circle', 'ring'):
        return None, size / 2
    if kind in ('square', 'square_outline'):
        return _polygon(cx, cy, size / 2 * math.sqrt(2), 4, angle + math.pi / 4), None
    if kind in ('triangle', 'triangle_outline'):
        return _polygon(cx, cy, size / 2 * 1.1, 3, angle), None
    if kind == 'plus':
        return None, None
    raise ValueError(f'unknown shape kind {kind!r}')


def _box(kind, cx, cy, size, angle):
    pts, radius = _shape_geometry(kind, cx, cy, size, angle)
    if pts is not None:
        return np.concatenate([pts.min(0), pts.max(0)])
    half = radius if radius is not None else size / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def _px(*values):  # in cv2's fixed point
    return tuple(int(round(v * _ONE)) for v in values)


def _draw(img, kind, cx, cy, size, angle, colour, thickness):
    pts, radius = _shape_geometry(kind, cx, cy, size, angle)
    if kind == 'circle':
        cv2.circle(img, _px(cx, cy), _px(radius)[0], colour, -1, _AA, _SHIFT)
    elif kind == 'ring':
        cv2.circle(img, _px(cx, cy), _px(radius - thickness / 2)[0], colour, thickness,
                   _AA, _SHIFT)
    elif kind == 'plus':
        h = size / 2
        for (x0, y0, x1, y1) in ((cx - h, cy, cx + h, cy), (cx, cy - h, cx, cy + h)):
            cv2.line(img, _px(x0, y0), _px(x1, y1), colour, thickness, _AA, _SHIFT)
    else:
        poly = np.round(pts * _ONE).astype(np.int32)[None]
        if kind.endswith('_outline'):
            cv2.polylines(img, poly, True, colour, thickness, _AA, _SHIFT)
        else:
            cv2.fillPoly(img, poly, colour, _AA, _SHIFT)


def _iou_free(box, boxes, gap):
    return not any(box[0] < b[2] + gap and b[0] < box[2] + gap and box[1] < b[3] + gap
                   and b[1] < box[3] + gap for b in boxes)


def generate_scene(seed, index, height=160, width=160, min_size=12, max_size=64,
                   objects=(1, 4), distractors=(1, 4), clutter_lines=6, clutter_dots=20,
                   noise=12.0, gap=2, max_tries=60):
    """Scene ``index`` of ``seed``: an RGB uint8 image, float32 boxes (N x 4, x1 y1 x2 y2)
    and int64 labels into :data:`CLASSES`. ``objects``/``distractors``: inclusive (min,
    max) counts; an object with no free place in ``max_tries`` draws is left out."""
    if not 4 <= min_size <= max_size:
        raise ValueError(f'min_size and max_size must satisfy 4 <= min_size <= max_size, '
                         f'got min_size={min_size}, max_size={max_size}')
    if max_size > min(height, width) - 2 * gap:
        raise ValueError(f'max_size={max_size} does not fit a {height}x{width} image')
    for name, rng_pair in (('objects', objects), ('distractors', distractors)):
        if len(rng_pair) != 2 or not 0 <= rng_pair[0] <= rng_pair[1]:
            raise ValueError(f'{name} must be (min, max) with 0 <= min <= max, '
                             f'got {rng_pair}')
    rng = np.random.default_rng([int(seed), int(index)])
    img = np.clip(_background(rng, height, width, noise), 0, 255).astype(np.uint8)

    for _ in range(clutter_lines):  # thin lines crossing the image
        p0 = rng.uniform(0, [width, height])
        p1 = p0 + rng.normal(0, max(height, width) / 3, size=2)
        cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1),
                 _rand_colour(rng), 1, _AA)
    for _ in range(clutter_dots):  # specks far below the smallest object
        c = rng.uniform(0, [width, height])
        cv2.circle(img, (int(c[0]), int(c[1])), int(rng.integers(1, max(2, min_size // 5))),
                   _rand_colour(rng), -1, _AA)

    kinds = ([CLASSES[i] for i in rng.integers(0, len(CLASSES),
                                               rng.integers(objects[0], objects[1] + 1))]
             + [DISTRACTORS[i] for i in rng.integers(0, len(DISTRACTORS),
                                                     rng.integers(distractors[0],
                                                                  distractors[1] + 1))])
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    placed, boxes, labels = [], [], []
    log_lo, log_hi = math.log(min_size), math.log(max_size)
    for kind in kinds:
        size = math.exp(rng.uniform(log_lo, log_hi))
        angle = rng.uniform(0, 2 * math.pi)
        colour = _rand_colour(rng)
        thickness = max(1, int(round(size / 10)))
        for _ in range(max_tries):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            box = _box(kind, cx, cy, size, angle)
            if (box[0] >= gap and box[1] >= gap and box[2] <= width - gap
                    and box[3] <= height - gap and _iou_free(box, placed, gap)):
                break
        else:
            continue
        _draw(img, kind, cx, cy, size, angle, colour, thickness)
        placed.append(box)
        if kind in CLASSES:
            # the box of the pixels the shape covers at least half (anti-aliased edges)
            mask = np.zeros((height, width), np.uint8)
            _draw(mask, kind, cx, cy, size, angle, 255, thickness)
            ys, xs = np.nonzero(mask >= 128)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(CLASSES.index(kind))
    return (img, np.array(boxes, dtype=np.float32).reshape(-1, 4),
            np.array(labels, dtype=np.int64))

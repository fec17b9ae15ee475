"""Procedural training images for the demo model (pure torch).

Each image has exactly one large main object whose class is the "prompt", on a muted background:

* the object: a red disc, blue square, green triangle or yellow diamond, radius 28–38 px
  (≈ ½ of the 128 px side), centred within ±12 px of the image centre, shaded from the top left
  and striped with period ``STRIPE_PERIOD`` px at a random angle (the fine texture);
* the background: a vertical gradient of two desaturated colours with a grain of period
  ``GRAIN_PERIOD`` px and soft low-frequency blotches.

Objects are saturated and the background is not, so the number of objects in any image is the
number of large saturated blobs (:func:`demo.metrics.count_objects`).
"""
from __future__ import annotations

import math

import torch

from .spec import CLASSES, NATIVE_PX

STRIPE_PERIOD = 8.0
GRAIN_PERIOD = 4.0
OBJECT_RADIUS = (28.0, 38.0)
CENTRE_JITTER = 12.0
# Saturated base colours of the classes (RGB in [0, 1]), in CLASSES order.
CLASS_RGB = torch.tensor([[0.86, 0.16, 0.12], [0.14, 0.32, 0.88], [0.14, 0.70, 0.20], [0.93, 0.80, 0.10]])
assert CLASS_RGB.shape[0] == len(CLASSES)


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _signed_distance(kind: torch.Tensor, x: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (px, negative inside) of each class's shape centred at the origin."""
    disc = torch.sqrt(x * x + y * y) - r
    side = r * 0.86
    square = torch.maximum(x.abs(), y.abs()) - side
    diamond = (x.abs() + y.abs() - r * 1.15) / math.sqrt(2.0)
    # Equilateral triangle pointing up, circumradius 1.2 r.
    a = r * 1.2
    k = math.sqrt(3.0)
    tri = torch.maximum((k * x.abs() + y) / 2.0 - a / 2.0, -y - a / 2.0)
    shapes = torch.stack([disc, square, tri, diamond])  # [4, B, H, W]
    return shapes.gather(0, kind.view(1, -1, 1, 1).expand(1, *x.shape)).squeeze(0)


def render(classes: torch.Tensor, generator: torch.Generator, size: int = NATIVE_PX,
           texture_scale: float | None = None) -> torch.Tensor:
    """Images ``[B, 3, size, size]`` in [0, 1], one object of class ``classes[i]`` each.

    ``size`` other than ``NATIVE_PX`` renders the same layout distribution scaled to that side
    (object radius and, unless ``texture_scale`` is given, texture periods scale with it).
    ``texture_scale`` fixes the texture periods at that multiple of ``STRIPE_PERIOD`` /
    ``GRAIN_PERIOD`` px whatever the size: a larger picture of the same scene with the same fine
    detail per pixel, as a high-resolution photograph has. The random draws do not depend on
    ``size`` or ``texture_scale``, so one generator state renders one scene at any size.
    """
    g = generator
    b = classes.shape[0]
    s = size / NATIVE_PX
    ts = s if texture_scale is None else texture_scale
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                            torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    yy, xx = yy.expand(b, -1, -1), xx.expand(b, -1, -1)

    # Background: gradient between two muted colours, grain and blotches.
    grey = _uniform(g, b, 0.35, 0.75).view(b, 1, 1, 1)
    tint = (torch.rand(b, 3, 1, 1, generator=g) - 0.5) * 0.12
    top, bottom = grey + tint, grey * _uniform(g, b, 0.6, 0.9).view(b, 1, 1, 1) - tint
    t = (yy / size).unsqueeze(1)
    background = top * (1 - t) + bottom * t
    phase = torch.rand(b, 2, 1, 1, generator=g) * 2 * math.pi
    grain = (torch.sin(2 * math.pi * xx.unsqueeze(1) / (GRAIN_PERIOD * ts) + phase[:, :1])
             * torch.sin(2 * math.pi * yy.unsqueeze(1) / (GRAIN_PERIOD * ts) + phase[:, 1:]))
    background = background + 0.05 * grain
    blotch = torch.randn(b, 1, 4, 4, generator=g)
    blotch = torch.nn.functional.interpolate(blotch, size=(size, size), mode="bicubic", align_corners=False)
    background = background + 0.04 * blotch

    # The object.
    radius = _uniform(g, b, *OBJECT_RADIUS).view(b, 1, 1) * s
    cx = (NATIVE_PX / 2 + _uniform(g, b, -CENTRE_JITTER, CENTRE_JITTER)).view(b, 1, 1) * s
    cy = (NATIVE_PX / 2 + _uniform(g, b, -CENTRE_JITTER, CENTRE_JITTER)).view(b, 1, 1) * s
    x, y = xx - cx, yy - cy
    alpha = (0.5 - _signed_distance(classes, x, y, radius)).clamp(0, 1).unsqueeze(1)
    shade = (1.0 - 0.35 * (x + y) / (2 * radius)).clamp(0.5, 1.4).unsqueeze(1)
    angle = torch.rand(b, 1, 1, generator=g) * math.pi
    along = x * torch.cos(angle) + y * torch.sin(angle)
    stripes = torch.sin(2 * math.pi * along / (STRIPE_PERIOD * ts)).unsqueeze(1)
    colour = CLASS_RGB[classes].view(b, 3, 1, 1)
    obj = colour * shade * (1.0 + 0.18 * stripes)

    return (background * (1 - alpha) + obj * alpha).clamp(0, 1)


def random_classes(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(len(CLASSES), (n,), generator=generator)

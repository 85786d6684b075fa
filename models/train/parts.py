"""Look-alike machined parts: a deterministic catalog of 10 to 10,000+ products, each photographed anew on demand.

No public many-SKU industrial photo set installs here, so this one is drawn. Eight families (the categories):
plates, gears, brackets, rings, flanges, nuts, shafts and links. A product is one family and one value of each of
its details (hole count, teeth, slot, bore, finish, proportions...): product ids are numbered so that neighbours
in a family differ in one detail, the way a plant's catalog holds the same bracket with four holes and with six.
Every photo is taken anew from a seed: pose (rotation, scale, position, a slight perspective), light (direction,
brightness, contrast, colour temperature), a shadow, a background (plain, gradient, belt, mat, speckle), blur,
sensor noise and JPEG quality.

`catalog(n)` names the first n products; `photo(product, k, seed=...)` draws the k-th photo of one; the
`export_*` functions write folders as `partsight train` and the camera read them, like models.train.datasets.
Products past the first n are of the same families: the never-seen look-alikes of a catalog of n.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from models.errors import DatasetError
from models.store.catalog import Catalog

PHOTO_SIZE = 256
_DRAW = 512  # parts are drawn at twice the photo's size, then reduced: smooth edges
FINISHES: dict[str, tuple[int, int, int]] = {
    "steel": (150, 154, 160),
    "zinc": (190, 196, 206),
    "brass": (184, 150, 70),
    "black-oxide": (52, 52, 58),
    "anodised-red": (165, 50, 45),
}


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # singular, in product ids and names
    category: str
    details: tuple[tuple[str, tuple[object, ...]], ...]  # (detail, values); the first changes fastest

    @property
    def variants(self) -> int:
        return math.prod(len(values) for _, values in self.details)

    def variant(self, index: int) -> dict[str, object]:
        """The details of the family's `index`-th variant (mixed radix: neighbours differ in the first detail)."""
        chosen: dict[str, object] = {}
        for detail, values in self.details:
            index, digit = divmod(index, len(values))
            chosen[detail] = values[digit]
        return chosen


FINISH = ("finish", tuple(FINISHES))
FAMILIES: tuple[Family, ...] = (
    Family(
        "plate",
        "plates",
        (
            ("holes", (2, 3, 4, 6, 8)),
            ("aspect", (1.0, 1.4, 2.0)),
            ("slot", (False, True)),
            FINISH,
            ("corners", ("square", "round")),
            ("hole_size", (0.07, 0.11)),
            ("notch", (False, True)),
            ("margin", (0.14, 0.22)),
        ),
    ),
    Family(
        "gear",
        "gears",
        (
            ("teeth", tuple(range(8, 42, 2))),
            ("bore", ("round", "keyed", "hex")),
            FINISH,
            ("web_holes", (0, 4, 6)),
            ("rim", ("thin", "thick")),
        ),
    ),
    Family(
        "bracket",
        "brackets",
        (
            ("holes", (1, 2, 3)),
            ("arms", (1.0, 1.5, 2.0)),
            ("slot", (False, True)),
            FINISH,
            ("gusset", (False, True)),
            ("width", (0.16, 0.24)),
            ("corner", ("sharp", "round")),
            ("hole_size", (0.05, 0.08)),
            ("notch", (False, True)),
        ),
    ),
    Family(
        "ring",
        "rings",
        (
            ("notches", (0, 1, 2, 4)),
            ("inner", (0.3, 0.45, 0.6, 0.75)),
            FINISH,
            ("tabs", (0, 2, 3)),
            ("holes", (0, 4, 6, 8)),
            ("edge", ("plain", "knurled")),
        ),
    ),
    Family(
        "flange",
        "flanges",
        (
            ("bolts", (3, 4, 5, 6, 8, 10, 12)),
            ("bore", (0.2, 0.3, 0.4)),
            FINISH,
            ("hub", (False, True)),
            ("outline", ("round", "square")),
            ("bolt_circle", (0.62, 0.74)),
            ("slots", (0, 2)),
        ),
    ),
    Family(
        "nut",
        "nuts",
        (
            ("sides", (6, 4, 8)),
            ("castle", (0, 4, 6)),
            ("hole", (0.35, 0.5, 0.62)),
            FINISH,
            ("collar", (False, True)),
            ("marks", (0, 1, 2, 3)),
            ("chamfer", (False, True)),
        ),
    ),
    Family(
        "shaft",
        "shafts",
        (
            ("grooves", (0, 1, 2, 3)),
            ("length", (3.0, 4.0, 5.0, 6.0)),
            ("head", ("none", "round", "hex")),
            FINISH,
            ("thread", ("none", "half", "full")),
            ("chamfer", (False, True)),
            ("flat", (False, True)),
        ),
    ),
    Family(
        "link",
        "links",
        (
            ("holes", (2, 3, 4)),
            ("length", (2.0, 2.5, 3.0, 3.5)),
            FINISH,
            ("ends", ("round", "square")),
            ("waist", (False, True)),
            ("hole_size", (0.28, 0.4)),
            ("slot", (False, True)),
            ("countersink", (False, True)),
        ),
    ),
)
CAPACITY = len(FAMILIES) * min(family.variants for family in FAMILIES)  # products, round-robin over the families


@dataclass(frozen=True, slots=True)
class Part:
    index: int
    family: Family
    details: dict[str, object]

    @property
    def product(self) -> str:
        return f"{self.family.name}-{self.index // len(FAMILIES):04d}"

    @property
    def name(self) -> str:
        shown = ", ".join(f"{detail.replace('_', ' ')} {value}" for detail, value in self.details.items())
        return f"{self.family.name.capitalize()} ({shown})"


def part(index: int) -> Part:
    """The catalog's `index`-th product: families in turn, each family's variants in order."""
    if not 0 <= index < CAPACITY:
        raise DatasetError(f"the parts catalog holds {CAPACITY} products, asked for number {index}")
    family = FAMILIES[index % len(FAMILIES)]
    return Part(index, family, family.variant(index // len(FAMILIES)))


def parts(count: int, *, start: int = 0) -> list[Part]:
    """Products start .. start + count - 1 (a catalog of n is parts(n); its never-seen look-alikes follow it)."""
    return [part(index) for index in range(start, start + count)]


def catalog(count: int) -> Catalog:
    return {
        item.product: {
            "product": item.product,
            "name": item.name,
            "category": item.family.category,
            "sku": f"PS-{item.index:05d}",
            "source": "partsight's drawn look-alike parts (models/train/parts.py)",
        }
        for item in parts(count)
    }


# ------------------------------------------------------------------------------------------------- drawing


def _circle(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, fill: int) -> None:
    draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def _polygon_points(x: float, y: float, r: float, sides: int, turn: float = 0.0) -> list[tuple[float, float]]:
    return [
        (x + r * math.cos(turn + 2 * math.pi * i / sides), y + r * math.sin(turn + 2 * math.pi * i / sides))
        for i in range(sides)
    ]


def _ring_of(draw: ImageDraw.ImageDraw, count: int, radius: float, hole: float, *, c: float, fill: int) -> None:
    for i in range(count):
        angle = 2 * math.pi * i / count - math.pi / 2
        _circle(draw, c + radius * math.cos(angle), c + radius * math.sin(angle), hole, fill)


def _slot(draw: ImageDraw.ImageDraw, start: tuple[float, float], end: tuple[float, float], r: float, fill: int) -> None:
    (x0, y0), (x1, y1) = start, end
    draw.line((x0, y0, x1, y1), fill=fill, width=int(2 * r))
    _circle(draw, x0, y0, r, fill)
    _circle(draw, x1, y1, r, fill)


def _plate(d: ImageDraw.ImageDraw, p: dict[str, object], s: int) -> None:
    aspect, margin = float(p["aspect"]), float(p["margin"])  # type: ignore[arg-type]
    w = 0.68 * s  # a square plate's diagonal stays inside the circle a rotation keeps
    h = w / aspect
    x0, y0, x1, y1 = (s - w) / 2, (s - h) / 2, (s + w) / 2, (s + h) / 2
    radius = 0.08 * s if p["corners"] == "round" else 0
    d.rounded_rectangle((x0, y0, x1, y1), radius=radius, fill=255)
    if p["notch"]:
        d.rectangle((s / 2 - 0.05 * s, y0 - 1, s / 2 + 0.05 * s, y0 + 0.07 * s), fill=0)
    holes, r = int(p["holes"]), float(p["hole_size"]) * s / 2  # type: ignore[call-overload, arg-type]
    mx, my = margin * w, margin * h
    rows = 1 if holes <= 3 else 2
    per_row = holes if rows == 1 else holes // 2
    for row in range(rows):
        y = s / 2 if rows == 1 else (y0 + my if row == 0 else y1 - my)
        for i in range(per_row):
            x = x0 + mx + (w - 2 * mx) * (i / max(1, per_row - 1) if per_row > 1 else 0.5)
            _circle(d, x, y, r, 0)
    if p["slot"]:
        _slot(d, (s / 2 - 0.12 * s, s / 2 + (0.0 if rows == 2 else 0.12 * h)), (s / 2 + 0.12 * s, s / 2), 0.03 * s, 0)


def _gear(d: ImageDraw.ImageDraw, p: dict[str, object], s: int) -> None:
    teeth = int(p["teeth"])  # type: ignore[call-overload]
    c, outer = s / 2, 0.42 * s
    root = outer - (0.07 if p["rim"] == "thick" else 0.05) * s
    points = []
    for i in range(teeth * 4):
        angle = 2 * math.pi * i / (teeth * 4)
        radius = outer if i % 4 in (1, 2) else root
        points.append((c + radius * math.cos(angle), c + radius * math.sin(angle)))
    d.polygon(points, fill=255)
    web = int(p["web_holes"])  # type: ignore[call-overload]
    if web:
        _ring_of(d, web, 0.22 * s, 0.05 * s, c=c, fill=0)
    bore = 0.08 * s
    if p["bore"] == "hex":
        d.polygon(_polygon_points(c, c, bore * 1.15, 6), fill=0)
    else:
        _circle(d, c, c, bore, 0)
        if p["bore"] == "keyed":
            d.rectangle((c - 0.02 * s, c - bore - 0.035 * s, c + 0.02 * s, c), fill=0)


def _bracket(d: ImageDraw.ImageDraw, p: dict[str, object], s: int) -> None:
    width, ratio = float(p["width"]) * s, float(p["arms"])  # type: ignore[arg-type]
    long_arm = 0.66 * s
    short_arm = long_arm / ratio
    x0, y1 = 0.17 * s, 0.83 * s
    radius = int(width * 0.6) if p["corner"] == "round" else 0
    d.rounded_rectangle((x0, y1 - long_arm, x0 + width, y1), radius=radius, fill=255)  # the upright
    d.rounded_rectangle((x0, y1 - width, x0 + short_arm + 0.11 * s, y1), radius=radius, fill=255)  # the foot
    if p["gusset"]:
        d.polygon(
            [(x0 + width, y1 - width), (x0 + width, y1 - width - 0.2 * s), (x0 + width + 0.2 * s, y1 - width)], fill=255
        )
    holes, r = int(p["holes"]), float(p["hole_size"]) * s  # type: ignore[call-overload, arg-type]
    for i in range(holes):
        _circle(d, x0 + width / 2, y1 - width - 0.12 * s - i * (long_arm - width - 0.2 * s) / max(1, holes), r, 0)
        _circle(d, x0 + width + 0.08 * s + i * (short_arm - width) / max(1, holes), y1 - width / 2, r, 0)
    if p["slot"]:
        _slot(d, (x0 + width / 2, y1 - long_arm + 0.08 * s), (x0 + width / 2, y1 - long_arm + 0.2 * s), r, 0)
    if p["notch"]:
        d.rectangle(
            (x0 + short_arm + 0.11 * s - 0.05 * s, y1 - 0.035 * s, x0 + short_arm + 0.11 * s + 1, y1 + 1), fill=0
        )


def _ring(d: ImageDraw.ImageDraw, p: dict[str, object], s: int) -> None:
    c, outer = s / 2, 0.4 * s
    tabs = int(p["tabs"])  # type: ignore[call-overload]
    for i in range(tabs):
        angle = 2 * math.pi * i / tabs
        _circle(d, c + outer * math.cos(angle), c + outer * math.sin(angle), 0.07 * s, 255)
    if p["edge"] == "knurled":
        d.polygon(
            [
                (
                    c + (outer + (0.012 * s if i % 2 else 0)) * math.cos(2 * math.pi * i / 96),
                    c + (outer + (0.012 * s if i % 2 else 0)) * math.sin(2 * math.pi * i / 96),
                )
                for i in range(96)
            ],
            fill=255,
        )
    else:
        _circle(d, c, c, outer, 255)
    inner = outer * float(p["inner"])  # type: ignore[arg-type]
    _circle(d, c, c, inner, 0)
    holes = int(p["holes"])  # type: ignore[call-overload]
    if holes and inner < 0.7 * outer:
        _ring_of(d, holes, (outer + inner) / 2, 0.2 * (outer - inner), c=c, fill=0)
    for i in range(int(p["notches"])):  # type: ignore[call-overload]
        angle = 2 * math.pi * i / max(1, int(p["notches"])) + math.pi / 4  # type: ignore[call-overload]
        nx, ny = c + outer * math.cos(angle), c + outer * math.sin(angle)
        _circle(d, nx, ny, 0.045 * s, 0)


def _flange(d: ImageDraw.ImageDraw, p: dict[str, object], s: int) -> None:
    c, outer = s / 2, 0.42 * s
    if p["outline"] == "square":
        d.rounded_rectangle((c - outer, c - outer, c + outer, c + outer), radius=int(0.1 * s), fill=255)
    else:
        _circle(d, c, c, outer, 255)
    bolts = int(p["bolts"])  # type: ignore[call-overload]
    _ring_of(d, bolts, outer * float(p["bolt_circle"]), 0.035 * s, c=c, fill=0)  # type: ignore[arg-type]
    bore = outer * float(p["bore"])  # type: ignore[arg-type]
    if p["hub"]:
        _circle(d, c, c, bore + 0.06 * s, 200)
    _circle(d, c, c, bore, 0)
    for i in range(int(p["slots"])):  # type: ignore[call-overload]
        angle = math.pi * i + math.pi / bolts
        r0, r1 = bore + 0.08 * s, outer * 0.5
        start = (c + r0 * math.cos(angle), c + r0 * math.sin(angle))
        _slot(d, start, (c + r1 * math.cos(angle), c + r1 * math.sin(angle)), 0.015 * s, 0)


def _nut(d: ImageDraw.ImageDraw, p: dict[str, object], s: int) -> None:
    c, outer = s / 2, 0.38 * s
    sides = int(p["sides"])  # type: ignore[call-overload]
    if p["collar"]:
        _circle(d, c, c, outer * 1.12, 170)
    d.polygon(_polygon_points(c, c, outer, sides, math.pi / sides), fill=255)
    if p["chamfer"]:
        d.ellipse(
            (c - outer * 0.92, c - outer * 0.92, c + outer * 0.92, c + outer * 0.92), outline=190, width=int(0.015 * s)
        )
    hole = outer * float(p["hole"])  # type: ignore[arg-type]
    castle = int(p["castle"])  # type: ignore[call-overload]
    for i in range(castle):
        angle = 2 * math.pi * i / castle
        _slot(d, (c, c), (c + outer * math.cos(angle), c + outer * math.sin(angle)), 0.025 * s, 0)
    _circle(d, c, c, hole, 0)
    for i in range(int(p["marks"])):  # type: ignore[call-overload]
        _circle(d, c - 0.1 * s + i * 0.1 * s, c + (hole + outer) / 2, 0.015 * s, 110)


def _shaft(d: ImageDraw.ImageDraw, p: dict[str, object], s: int) -> None:
    length = 0.84 * s
    diameter = length / float(p["length"])  # type: ignore[arg-type]
    x0, x1, y = (s - length) / 2, (s + length) / 2, s / 2
    head = p["head"]
    body_x0 = x0 + (0.1 * s if head != "none" else 0)
    cut = diameter * 0.15 if p["chamfer"] else 0
    d.polygon(
        [
            (body_x0, y - diameter / 2),
            (x1 - cut, y - diameter / 2),
            (x1, y - diameter / 2 + cut),
            (x1, y + diameter / 2 - cut),
            (x1 - cut, y + diameter / 2),
            (body_x0, y + diameter / 2),
        ],
        fill=255,
    )
    if head == "round":
        d.ellipse((x0, y - diameter, x0 + 0.14 * s, y + diameter), fill=255)
    elif head == "hex":
        d.rectangle((x0, y - diameter * 0.95, x0 + 0.1 * s, y + diameter * 0.95), fill=255)
        d.line((x0, y, x0 + 0.1 * s, y), fill=180, width=int(0.01 * s))
    threaded = {"none": 0.0, "half": 0.5, "full": 0.9}[str(p["thread"])]
    if threaded:
        start = x1 - threaded * (x1 - body_x0)
        for x in np.arange(start, x1 - cut, 0.022 * s):
            d.line((x, y - diameter / 2, x + 0.011 * s, y + diameter / 2), fill=150, width=int(0.006 * s) + 1)
    for i in range(int(p["grooves"])):  # type: ignore[call-overload]
        x = body_x0 + (i + 1) * (x1 - body_x0) * 0.5 / 4
        d.rectangle((x, y - diameter / 2, x + 0.012 * s, y + diameter / 2), fill=90)
    if p["flat"]:
        d.rectangle(
            (body_x0 + 0.05 * s, y - diameter / 2, body_x0 + 0.25 * s, y - diameter / 2 + diameter * 0.18), fill=205
        )


def _link(d: ImageDraw.ImageDraw, p: dict[str, object], s: int) -> None:
    length = 0.86 * s
    width = length / float(p["length"])  # type: ignore[arg-type]
    x0, x1, y = (s - length) / 2, (s + length) / 2, s / 2
    if p["ends"] == "round":
        d.rounded_rectangle((x0, y - width / 2, x1, y + width / 2), radius=int(width / 2), fill=255)
    else:
        d.rectangle((x0, y - width / 2, x1, y + width / 2), fill=255)
    if p["waist"]:
        d.ellipse((s / 2 - 0.18 * s, y - width / 2 - 0.05 * s, s / 2 + 0.18 * s, y - width / 2 + 0.06 * s), fill=0)
        d.ellipse((s / 2 - 0.18 * s, y + width / 2 - 0.06 * s, s / 2 + 0.18 * s, y + width / 2 + 0.05 * s), fill=0)
    holes, r = int(p["holes"]), width * float(p["hole_size"])  # type: ignore[call-overload, arg-type]
    for i in range(holes):
        x = x0 + width / 2 + i * (length - width) / (holes - 1)
        if p["countersink"]:
            _circle(d, x, y, r * 1.35, 170)
        _circle(d, x, y, r, 0)
    if p["slot"]:
        _slot(d, (s / 2 - 0.06 * s, y), (s / 2 + 0.06 * s, y), r * 0.6, 0)


DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, dict[str, object], int], None]] = {
    "plate": _plate,
    "gear": _gear,
    "bracket": _bracket,
    "ring": _ring,
    "flange": _flange,
    "nut": _nut,
    "shaft": _shaft,
    "link": _link,
}


def silhouette(item: Part) -> Image.Image:
    """The part's shape and its relief as an 'L' image: 0 nothing, 255 the face, greys the steps and marks."""
    shape = Image.new("L", (_DRAW, _DRAW), 0)
    DRAWERS[item.family.name](ImageDraw.Draw(shape), item.details, _DRAW)
    return shape


# ------------------------------------------------------------------------------------------------ photos


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = int(rng.integers(0, 5))
    base = rng.uniform(60, 220)
    tint = rng.uniform(0.85, 1.15, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:  # plain
        grey: np.ndarray = np.full((size, size), base, np.float32)
    elif kind == 1:  # a gradient across the bench
        angle = rng.uniform(0, 2 * math.pi)
        grey = base + rng.uniform(20, 70) * ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle))
    elif kind == 2:  # a belt: stripes across
        period = rng.uniform(0.04, 0.15)
        grey = base + rng.uniform(8, 30) * np.sign(np.sin(2 * math.pi * yy / period))
    elif kind == 3:  # a cutting mat: a grid
        period = rng.uniform(0.06, 0.2)
        lines = (np.abs(((xx / period) % 1) - 0.5) > 0.46) | (np.abs(((yy / period) % 1) - 0.5) > 0.46)
        grey = base - rng.uniform(20, 60) * lines
    else:  # speckled cast floor
        grey = base + rng.normal(0, rng.uniform(6, 20), (size, size))
    rgb: np.ndarray = np.clip(grey[..., None] * tint, 0, 255).astype(np.float32)
    return rgb


def _shaded(shape: np.ndarray, finish: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """The part's face in its finish, lit from a random side, relief greys darker, a sheen across it."""
    size = shape.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * math.pi)
    light = 0.8 + 0.35 * ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle))
    sheen_at = rng.uniform(0.2, 0.8)
    sheen = 0.25 * np.exp(-(((xx * math.cos(angle + 1) + yy * math.sin(angle + 1)) - sheen_at) ** 2) / 0.01)
    relief = np.where(shape > 0, shape.astype(np.float32) / 255, 0)
    face = (relief > 0)[..., None]
    colour = np.asarray(finish, np.float32) * (light * relief)[..., None] + 255 * sheen[..., None] * face
    clipped: np.ndarray = np.clip(colour, 0, 255)
    return clipped


def _perspective_coefficients(size: int, rng: np.random.Generator, jitter: float) -> list[float]:
    """PIL's 8 perspective coefficients mapping the square to itself with its corners moved up to `jitter`."""
    src = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64)
    dst = src + rng.uniform(-jitter, jitter, src.shape) * size
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    solution = np.linalg.solve(np.asarray(rows), src.reshape(-1))
    return [float(value) for value in solution]


@dataclass(frozen=True, slots=True)
class Nudge:
    """How a later frame of the same photo differs: the part turned and moved a little, the light changed a little,
    fresh sensor noise (seeded by `noise_seed`: each frame its own). The rest (background, shadow, finish, blur) is
    the photo's own."""

    noise_seed: int | tuple[int, ...]
    degrees: float = 0.0
    shift: tuple[int, int] = (0, 0)  # pixels right and down (the part kept inside the photo)
    light: float = 1.0  # brightness factor on top of the photo's


def photo(item: Part, k: int, *, seed: int = 0, size: int = PHOTO_SIZE, nudge: Nudge | None = None) -> Image.Image:
    """The `k`-th photo of a part, taken anew: the same (part, k, seed) always gives the same picture. With `nudge`,
    a later camera frame of that photo: drawn again with the part turned and moved, not resampled from the picture."""
    rng = np.random.default_rng([seed, item.index, k])
    change = nudge or Nudge(noise_seed=0)  # no change: the draws below are the photo's own, noise included
    shape = silhouette(item)
    turned = shape.rotate(rng.uniform(0, 360) + change.degrees, resample=Image.Resampling.BILINEAR)
    warped = turned.transform(
        turned.size,
        Image.Transform.PERSPECTIVE,
        _perspective_coefficients(_DRAW, rng, 0.05),
        resample=Image.Resampling.BILINEAR,
    )
    scale = rng.uniform(0.62, 0.95)
    side = int(size * scale)
    small = np.asarray(warped.resize((side, side), Image.Resampling.LANCZOS))
    layer = np.zeros((size, size), np.uint8)
    slack = size - side
    left, top = (_clamp(int(rng.integers(0, slack + 1)) + move, slack) for move in change.shift)
    layer[top : top + side, left : left + side] = small
    background = _background(rng, size)
    mask = Image.fromarray(layer).point(lambda v: 255 if v > 40 else int(v * 6))
    shadow = np.asarray(mask.filter(ImageFilter.GaussianBlur(rng.uniform(3, 9))), np.float32) / 255
    offset = rng.integers(-8, 9, 2)
    shadow = np.roll(shadow, (int(offset[0]), int(offset[1])), axis=(0, 1))
    background *= (1 - rng.uniform(0.25, 0.55) * shadow)[..., None]
    face = _shaded(layer, FINISHES[str(item.details["finish"])], rng)
    alpha = (np.asarray(mask, np.float32) / 255)[..., None]
    image = Image.fromarray(np.clip(face * alpha + background * (1 - alpha), 0, 255).astype(np.uint8))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3) * change.light)
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
    warm = rng.uniform(-0.08, 0.08)  # colour temperature: red up and blue down, or the reverse
    pixels = np.asarray(image, np.float32) * np.array([1 + warm, 1.0, 1 - warm], np.float32)
    if rng.random() < 0.35:
        pixels = np.asarray(
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(
                ImageFilter.GaussianBlur(rng.uniform(0.4, 1.4))
            ),
            np.float32,
        )
    sigma = rng.uniform(0, 5)
    pixels += (rng if nudge is None else np.random.default_rng(change.noise_seed)).normal(0, sigma, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _clamp(value: int, most: int) -> int:
    return min(max(value, 0), most)


def jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    """The photo as a camera sends it: JPEG at a quality between 60 and 95."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(60, 96)))
    return buffer.getvalue()


def export_training_folder(out: Path, *, products: int, per_product: int, seed: int = 0, start: int = 0) -> list[Path]:
    """Write `out/<category>/<product>/photo-<k>.jpg` for `products` parts from `start`; returns the written paths."""
    return _export(out, parts(products, start=start), per_product, seed, folders=True)


def export_camera_folder(
    out: Path, *, products: int, per_product: int, seed: int = 1, start: int = 0
) -> list[tuple[Path, str]]:
    """Write photos taken on another day (another seed) as `out/<product>-<k>.jpg`; returns (path, true product).
    `start` past a catalog's size gives its never-seen look-alikes."""
    items = parts(products, start=start)
    paths = _export(out, items, per_product, seed, folders=False)
    truth = [item.product for item in items for _ in range(per_product)]
    return list(zip(paths, truth, strict=True))


def _export(out: Path, items: Sequence[Part], per_product: int, seed: int, *, folders: bool) -> list[Path]:
    if per_product < 1:
        raise DatasetError(f"at least one photo per product, got {per_product}")
    written = []
    for item in items:
        for k in range(per_product):
            folder = out / item.family.category / item.product if folders else out
            target = folder / (f"photo-{k:03d}.jpg" if folders else f"{item.product}-{k:03d}.jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([seed, item.index, k, 1])
            target.write_bytes(jpeg(photo(item, k, seed=seed), rng))
            written.append(target)
    return written

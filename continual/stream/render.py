"""Vectorised renderer of the attribute world: integer codes ``(shape, colour, pattern, size)`` -> RGB images.

Every image is a single object on a noisy grey background. The object's shape is an implicit
(signed-distance style) function of per-image local coordinates, so a whole batch is drawn with
tensor ops on a coordinate grid; Python loops run only over chunks, over cache-sized tiles and over
the (shape, pattern) groups present in a tile (images are sorted by shape and pattern so that every
group is a contiguous slice and no image is ever drawn with a function other than its own).

Determinism: image ``i`` depends only on ``codes[i]``, ``seed``, ``i`` and the settings, never on
``chunk_size`` or on the other images. The per-image nuisance parameters (pose, scale, colour jitter,
background level) are all drawn up front from one generator seeded with ``seed``; the background
noise comes in fixed blocks of image indices, each from its own generator derived from ``seed``.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import Callable

import torch

from continual.stream.attributes import COLOURS, PALETTE, PATTERNS, SHAPES, SIZES

# Bump whenever the pixels produced for a given (codes, seed, settings) change: it keys the disk cache.
RENDER_VERSION = 1

# Object radius (distance of the outermost points from the centre) as a fraction of the image half-width.
SIZE_SCALES = (0.45, 0.8)
# A jittered small object must stay smaller than a jittered large one: 0.45 (1 + j) < 0.8 (1 - j).
MAX_SCALE_JITTER = (SIZE_SCALES[1] - SIZE_SCALES[0]) / (SIZE_SCALES[1] + SIZE_SCALES[0])
# Patterns darken the object colour by this factor (a shade of the same hue, so colour stays readable).
DARK_SHADE = 0.35
# Per-image uniform range of the background grey; below every palette colour's brightest channel.
BACKGROUND_LEVELS = (0.25, 0.45)
# Pattern geometry in pixels at 32x32; it scales with the image size so a 64x64 image looks the same.
# Dark parts cover well under half of the object even in the worst pixel alignment of an unrotated
# object (a band of width w holds at most ceil(w) pixel centres), so the object colour stays the majority.
# Dots and checks differ in scale (small round dots sparse on a 5.5 px grid vs 3 px squares on an 8 px
# checkerboard) because at 32x32 a 2 px dot and a 2 px square look alike.
STRIPE_PERIOD, STRIPE_DARK_WIDTH = 4.5, 1.4
DOT_PERIOD, DOT_RADIUS = 5.5, 1.1
CHECK_CELL, CHECK_INSET = 4.0, 0.725  # dark cells shrunk to 72.5 % of the cell: a checkerboard with grout

_NOISE_BLOCK = 256  # images per background-noise generator; fixed so noise is independent of chunking
_TILE_FLOATS = 1 << 18  # float32 elements per (tile, pixels) temporary: 1 MiB keeps a tile in L2 cache
_PARAM_COLUMNS = 8  # dx, dy, angle, scale, hue r/g/b, background level


@dataclass(frozen=True)
class RenderSettings:
    """Image size and nuisance variation of the rendered world; validated on construction."""

    image_size: int = 32
    position_jitter: float = 0.15  # max centre offset per axis, fraction of the image half-width
    rotation: bool = True  # random rotation in [0, 2 pi)
    scale_jitter: float = 0.1  # relative object scale jitter (+/-), below MAX_SCALE_JITTER
    hue_jitter: float = 0.04  # per-image additive uniform (+/-) jitter of each RGB channel
    noise_std: float = 0.06  # std of the per-pixel (grey) Gaussian background noise, in [0, 1] units
    chunk_size: int = 4096  # images rendered per vectorised call (bounds memory)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        for name in ("image_size", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"RenderSettings.{name} must be an int, got {value!r}")
        if self.image_size < 16:
            raise ValueError(f"RenderSettings.image_size must be >= 16, got {self.image_size}")
        if self.chunk_size < 1:
            raise ValueError(f"RenderSettings.chunk_size must be >= 1, got {self.chunk_size}")
        for name in ("position_jitter", "scale_jitter", "hue_jitter", "noise_std"):
            value = getattr(self, name)
            # `not value >= 0` also rejects NaN, which would silently poison every pixel.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
                raise ValueError(f"RenderSettings.{name} must be a finite number >= 0, got {value!r}")
        if self.scale_jitter >= MAX_SCALE_JITTER:
            raise ValueError(
                f"RenderSettings.scale_jitter must be < {MAX_SCALE_JITTER:.3f} so that small and large "
                f"objects never overlap in size, got {self.scale_jitter}"
            )
        if not isinstance(self.rotation, bool):
            raise ValueError(f"RenderSettings.rotation must be a bool, got {self.rotation!r}")

    def pixel_fields(self) -> dict[str, object]:
        """The fields that determine the pixels (all but ``chunk_size``), e.g. for a cache key."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "chunk_size"}


# ---------------------------------------------------------------------------------------------------
# Shapes: signed distance (pixels, negative inside) from local coordinates x, y (B, P) in pixels and
# the object radius r (B, 1) in pixels. Each writes into `out` (B, P). Outermost points sit at about r.
# Exact distances are not needed: only the zero level set (the mask) and a ~1 pixel ramp (anti-aliasing).
# ---------------------------------------------------------------------------------------------------

_COS30 = math.cos(math.pi / 6)


def _circle(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, out: torch.Tensor) -> None:
    # Smaller than the hexagon's inscribed circle, so the two differ by the hexagon's corners.
    torch.hypot(x, y, out=out).sub_(0.8 * r)


def _square(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, out: torch.Tensor) -> None:
    torch.maximum(x.abs(), y.abs(), out=out).sub_(0.7 * r)


def _triangle(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, out: torch.Tensor) -> None:
    # Equilateral, circumradius 1.05 r, apex up (image y grows downwards): the bottom edge has normal
    # +y, the two slanted edges (+-cos30, -sin30); the apothem is half the circumradius.
    slanted = x.abs().mul_(_COS30).sub_(y, alpha=0.5)
    torch.maximum(slanted, y, out=out).sub_(0.525 * r)


_DIAMOND_A, _DIAMOND_B = 0.55, 1.0  # half-diagonals: elongated, else a rotated diamond is a square
_DIAMOND_NORM = math.hypot(_DIAMOND_A, _DIAMOND_B)


def _diamond(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, out: torch.Tensor) -> None:
    # Edge |x|/a + |y|/b = 1, scaled by the edge normal's length so the ramp is ~1 pixel wide.
    torch.mul(x.abs(), _DIAMOND_B / _DIAMOND_NORM, out=out)
    out.add_(y.abs(), alpha=_DIAMOND_A / _DIAMOND_NORM).sub_((_DIAMOND_A * _DIAMOND_B / _DIAMOND_NORM) * r)


def _cross(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, out: torch.Tensor) -> None:
    # A plus sign is exactly {min(|x|,|y|) <= arm half-width and max(|x|,|y|) <= arm length}.
    ax, ay = x.abs(), y.abs()
    along = torch.maximum(ax, ay).sub_(0.9 * r)
    across = torch.minimum(ax, ay, out=ax).sub_(0.28 * r)
    torch.maximum(along, across, out=out)


# Five-pointed star, outer radius r, inner radius 0.45 r. Folding the polar angle into one half arm
# leaves a single edge from the tip (1, 0) to the inner vertex 0.45 (cos 36, sin 36); the star is the
# origin side of that edge's line, whose unit normal is at angle _STAR_NORMAL and offset _STAR_OFFSET.
_STAR_INNER = 0.45
_STAR_HALF_ARM = math.pi / 5
_edge = (_STAR_INNER * math.cos(_STAR_HALF_ARM) - 1.0, _STAR_INNER * math.sin(_STAR_HALF_ARM))
_STAR_NORMAL = math.atan2(-_edge[0], _edge[1])
_STAR_OFFSET = math.cos(_STAR_NORMAL)  # normal . tip
del _edge


def _star(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, out: torch.Tensor) -> None:
    rho = torch.hypot(x, y)
    # +pi/2 puts a tip straight up for an unrotated star; +pi/5 centres the fold on a tip.
    angle = torch.atan2(y, x).add_(math.pi / 2 + _STAR_HALF_ARM).remainder_(2 * _STAR_HALF_ARM)
    angle.sub_(_STAR_HALF_ARM).abs_().sub_(_STAR_NORMAL).cos_()
    torch.mul(rho, angle, out=out).sub_(_STAR_OFFSET * r)


def _ring(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, out: torch.Tensor) -> None:
    # Annulus 0.5 r .. 0.9 r: the hole is wide enough to stay open for small objects at 32x32.
    torch.hypot(x, y, out=out).sub_(0.7 * r).abs_().sub_(0.2 * r)


def _hexagon(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, out: torch.Tensor) -> None:
    # Flat-topped, circumradius 0.95 r: edge normals at 30, 90 and 150 degrees.
    ay = y.abs()
    slanted = x.abs().mul_(_COS30).add_(ay, alpha=0.5)
    torch.maximum(slanted, ay, out=out).sub_((0.95 * _COS30) * r)


_ShapeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]
_SHAPE_FNS: dict[str, _ShapeFn] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "diamond": _diamond,
    "cross": _cross,
    "star": _star,
    "ring": _ring,
    "hexagon": _hexagon,
}
assert tuple(_SHAPE_FNS) == SHAPES, "shape functions must follow the order of SHAPES"

# ---------------------------------------------------------------------------------------------------
# Patterns: darkness in [0, 1] (0 = object colour, 1 = DARK_SHADE of it) from local coordinates in
# pixels and the pixel unit u (image_size / 32). Patterns live in the object's rotated frame but keep
# their pixel period for both sizes, so small objects carry fewer, not finer, stripes (no aliasing).
# ---------------------------------------------------------------------------------------------------

# Added before `frac` so coordinates are positive (frac of a negative number is negative).
_POSITIVE_SHIFT = 1024.0


def _phase(x: torch.Tensor, period: float, centre_on_origin: bool) -> torch.Tensor:
    """Signed offset from the nearest cell centre in periods, in [-0.5, 0.5).

    With ``centre_on_origin`` a cell centre sits on the object centre, otherwise a cell border does.
    """
    shift = _POSITIVE_SHIFT + (0.5 if centre_on_origin else 0.0)
    return x.mul(1.0 / period).add_(shift).frac_().sub_(0.5)


def _stripes(x: torch.Tensor, y: torch.Tensor, u: float) -> torch.Tensor:
    period, half_width = STRIPE_PERIOD * u, 0.5 * STRIPE_DARK_WIDTH * u
    # Colour on the centre line, so a thin arm along the stripes is not swallowed by one dark band.
    distance = _phase(x, period, centre_on_origin=False).abs_().mul_(period)  # pixels to a band's centre
    return distance.neg_().add_(half_width + 0.5).clamp_(0.0, 1.0)


def _dots(x: torch.Tensor, y: torch.Tensor, u: float) -> torch.Tensor:
    period = DOT_PERIOD * u
    # A dot on the object centre: small and thin objects (cross arms, star) still show one.
    distance = torch.hypot(_phase(x, period, True), _phase(y, period, True)).mul_(period)
    return distance.neg_().add_(DOT_RADIUS * u + 0.5).clamp_(0.0, 1.0)


def _checks(x: torch.Tensor, y: torch.Tensor, u: float) -> torch.Tensor:
    cell = CHECK_CELL * u
    cx = x.mul(1.0 / cell).add_(_POSITIVE_SHIFT)
    cy = y.mul(1.0 / cell).add_(_POSITIVE_SHIFT)
    # Parity of the cell index, exactly 0 or 1: frac((i + j) / 2) * 2.
    parity = torch.floor(cx).add_(torch.floor(cy)).mul_(0.5).frac_().mul_(2.0)
    box = torch.maximum(cx.frac_().sub_(0.5).abs_(), cy.frac_().sub_(0.5).abs_()).mul_(cell)
    return box.neg_().add_(0.5 * CHECK_INSET * cell + 0.5).clamp_(0.0, 1.0).mul_(parity)


_PatternFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
_PATTERN_FNS: dict[str, _PatternFn | None] = {"plain": None, "stripes": _stripes, "dots": _dots, "checks": _checks}
assert tuple(_PATTERN_FNS) == PATTERNS, "pattern functions must follow the order of PATTERNS"


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------


def _mix_seed(seed: int, stream: int) -> int:
    """A well-mixed 63-bit generator seed for sub-stream ``stream`` of ``seed`` (splitmix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + (stream + 1) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


def _draw_params(n: int, seed: int) -> torch.Tensor:
    """Uniform [0, 1) nuisance draws ``(n, _PARAM_COLUMNS)``; row i depends on (seed, i) only."""
    generator = torch.Generator().manual_seed(_mix_seed(seed, 0))
    # One row-major draw: every image consumes the same count, so rows do not depend on n.
    return torch.rand(n, _PARAM_COLUMNS, generator=generator, dtype=torch.float64)


class _BlockNoise:
    """Standard normal background noise by image index, in fixed blocks of _NOISE_BLOCK images.

    Each block has its own generator derived from the seed, so an image's noise depends only on
    (seed, index). A generator is serial, so whole blocks are drawn on a small thread pool (torch
    releases the GIL): on CPU, drawing noise would otherwise be a third of the wall time. The last
    partially used block is kept so small chunks do not regenerate it.
    """

    def __init__(self, seed: int, pixels: int, device: torch.device, pool: ThreadPoolExecutor | None) -> None:
        self.seed, self.pixels, self.device, self.pool = seed, pixels, device, pool
        self._kept: tuple[int, torch.Tensor] | None = None

    def _fill(self, block: int, out: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=self.device).manual_seed(_mix_seed(self.seed, 1 + block))
        return out.normal_(generator=generator)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Noise ``(stop - start, pixels)`` for images start..stop-1."""
        out = torch.empty(stop - start, self.pixels, device=self.device)
        whole: list[tuple[int, torch.Tensor]] = []
        for block in range(start // _NOISE_BLOCK, (stop - 1) // _NOISE_BLOCK + 1):
            lo, hi = max(start, block * _NOISE_BLOCK), min(stop, (block + 1) * _NOISE_BLOCK)
            if hi - lo == _NOISE_BLOCK:  # a whole block: generated in place, no copy
                whole.append((block, out[lo - start : hi - start]))
                continue
            if self._kept is None or self._kept[0] != block:
                self._kept = (block, self._fill(block, torch.empty(_NOISE_BLOCK, self.pixels, device=self.device)))
            offset = block * _NOISE_BLOCK
            out[lo - start : hi - start] = self._kept[1][lo - offset : hi - offset]
        if self.pool is not None and len(whole) > 1:
            list(self.pool.map(lambda job: self._fill(*job), whole))
        else:
            for block, rows in whole:
                self._fill(block, rows)
        return out


def _check_codes(codes: torch.Tensor) -> torch.Tensor:
    """Codes as a CPU int64 ``(N, 4)`` tensor; ``ValueError`` for a wrong shape, dtype or value."""
    codes = torch.as_tensor(codes)
    if codes.ndim != 2 or codes.shape[1] != 4:
        raise ValueError(f"codes must have shape (N, 4), got {tuple(codes.shape)}")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise ValueError(f"codes must be integers, got {codes.dtype}")
    codes = codes.to(device="cpu", dtype=torch.long)
    vocabulary = zip(("shape", "colour", "pattern", "size"), (SHAPES, COLOURS, PATTERNS, SIZES))
    for k, (name, values) in enumerate(vocabulary):
        column = codes[:, k]
        if column.numel() and (int(column.min()) < 0 or int(column.max()) >= len(values)):
            raise ValueError(
                f"codes[:, {k}] ({name}) must lie in [0, {len(values)}), got {int(column.min())}..{int(column.max())}"
            )
    return codes


def _object_params(codes: torch.Tensor, draws: torch.Tensor, settings: RenderSettings) -> dict[str, torch.Tensor]:
    """Per-image pose, radius, colour and background (float32, pixels / 0..255 units) from the draws."""
    half = settings.image_size / 2.0
    centre_x = (2.0 * draws[:, 0] - 1.0) * settings.position_jitter * half
    centre_y = (2.0 * draws[:, 1] - 1.0) * settings.position_jitter * half
    angle = draws[:, 2] * (2.0 * math.pi) if settings.rotation else torch.zeros_like(draws[:, 2])
    base = torch.tensor(SIZE_SCALES, dtype=torch.float64)[codes[:, 3]]
    radius = base * (1.0 + (2.0 * draws[:, 3] - 1.0) * settings.scale_jitter) * half
    palette = torch.tensor(PALETTE, dtype=torch.float64)[codes[:, 1]]
    colour = (palette + (2.0 * draws[:, 4:7] - 1.0) * settings.hue_jitter).clamp(0.0, 1.0)
    background = BACKGROUND_LEVELS[0] + draws[:, 7] * (BACKGROUND_LEVELS[1] - BACKGROUND_LEVELS[0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Local coordinates (inverse rotation about the jittered centre) are affine in pixel x and y:
    # local_x = cos * x + sin * y + x0,  local_y = -sin * x + cos * y + y0.
    x0 = -(cos * centre_x + sin * centre_y)
    y0 = sin * centre_x - cos * centre_y
    return {
        "affine": torch.stack([cos, sin, x0, -sin, cos, y0], dim=1).float(),  # (N, 6)
        "radius": radius.float().unsqueeze(1),  # (N, 1) pixels
        "colour": (colour * 255.0).float(),  # (N, 3) 0..255
        "background": (background * 255.0).float().unsqueeze(1),  # (N, 1) 0..255
    }


def _groups(keys: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(key, start, stop)`` runs of equal values in sorted ``keys``."""
    values, counts = torch.unique_consecutive(keys, return_counts=True)
    runs, start = [], 0
    for value, count in zip(values.tolist(), counts.tolist()):
        runs.append((value, start, start + count))
        start += count
    return runs


class _Workspace:
    """Full-tile float buffers reused across tiles: fresh multi-MiB allocations each tile would cost
    page faults comparable to the arithmetic itself."""

    def __init__(self, tile: int, size: int, device: torch.device) -> None:
        self.local_x = torch.empty(tile, size, size, device=device)
        self.local_y = torch.empty(tile, size, size, device=device)
        self.sdf = torch.empty(tile, size * size, device=device)
        self.background = torch.empty(tile, size * size, device=device)
        self.noise = torch.empty(tile, size * size, device=device)
        self.rgb = torch.empty(tile, 3, size * size, device=device)
        # float -> uint8 casts are not vectorised on CPU; float -> int16 -> uint8 is several times faster.
        self.rgb16 = torch.empty(tile, 3, size * size, dtype=torch.int16, device=device)


def _render_tile(
    params: dict[str, torch.Tensor],
    keys: torch.Tensor,
    noise: torch.Tensor | None,
    grid_x: torch.Tensor,
    grid_y: torch.Tensor,
    settings: RenderSettings,
    work: _Workspace,
    rgb_out: torch.Tensor,
    mask_out: torch.Tensor | None,
) -> None:
    """Render one tile of images sorted by key = shape * len(PATTERNS) + pattern.

    Writes uint8 images into ``rgb_out`` (B, 3, P) and, if given, the object mask into ``mask_out`` (B, P).
    """
    b = keys.shape[0]
    affine = params["affine"]
    # (B, 1, W) + (B, H, 1) -> (B, H, W): one full-size pass per coordinate, on tiny broadcast operands.
    a = affine[:, :, None, None]  # (B, 6, 1, 1)
    local_x = torch.add(a[:, 0] * grid_x, a[:, 1] * grid_y + a[:, 2], out=work.local_x[:b])
    local_y = torch.add(a[:, 3] * grid_x, a[:, 4] * grid_y + a[:, 5], out=work.local_y[:b])
    local_x, local_y = local_x.view(b, -1), local_y.view(b, -1)  # (B, P) pixels, object frame

    sdf = work.sdf[:b]  # (B, P) signed distance in pixels
    # Contiguous runs of one shape (possibly spanning several patterns) share one shape call.
    radius = params["radius"]  # (B, 1) pixels
    for shape, start, stop in _groups(torch.div(keys, len(PATTERNS), rounding_mode="floor")):
        _SHAPE_FNS[SHAPES[shape]](local_x[start:stop], local_y[start:stop], radius[start:stop], sdf[start:stop])
    if mask_out is not None:
        torch.le(sdf, 0.0, out=mask_out)

    # Coverage with a one-pixel anti-aliasing ramp centred on the boundary.
    coverage = sdf.neg_().add_(0.5).clamp_(0.0, 1.0)  # (B, P), reuses the sdf storage

    level = params["background"]  # (B, 1)
    background = work.background[:b]  # (B, P)
    if noise is None:
        background.copy_(level.expand_as(background))
    else:
        torch.add(level, noise, alpha=255.0 * settings.noise_std, out=background)
    # Background weight (1 - coverage); + 0.5 so the final truncating integer cast rounds.
    background.addcmul_(background, coverage, value=-1.0).add_(0.5)

    unit = settings.image_size / 32.0
    for key, start, stop in _groups(keys):
        pattern_fn = _PATTERN_FNS[PATTERNS[key % len(PATTERNS)]]
        if pattern_fn is None:
            continue
        dark = pattern_fn(local_x[start:stop], local_y[start:stop], unit)
        part = coverage[start:stop]
        part.addcmul_(part, dark, value=-(1.0 - DARK_SHADE))  # coverage * (1 - (1 - shade) * dark)

    # (B, 1, P) + (B, 3, 1) * (B, 1, P) -> (B, 3, P) in one pass.
    colour = params["colour"]  # (B, 3) 0..255
    rgb = torch.addcmul(background.unsqueeze(1), colour.unsqueeze(2), coverage.unsqueeze(1), out=work.rgb[:b])
    rgb16 = work.rgb16[:b]
    rgb16.copy_(rgb.clamp_(0.0, 255.0))  # truncates; the + 0.5 above made it round
    rgb_out.copy_(rgb16)


def _tile_size(settings: RenderSettings, device: torch.device) -> int:
    """Images per tile: cache-sized on CPU (bandwidth bound), the whole chunk elsewhere."""
    if device.type != "cpu":
        return settings.chunk_size
    return max(1, min(settings.chunk_size, _TILE_FLOATS // (settings.image_size**2)))


def render(
    codes: torch.Tensor,
    seed: int,
    settings: RenderSettings = RenderSettings(),
    *,
    return_masks: bool = False,
    device: str | torch.device = "cpu",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Render one image per code row.

    Args:
        codes: integer ``(N, 4)`` rows ``(shape, colour, pattern, size)``.
        seed: seeds all nuisance variation; the same codes, seed and settings give identical bytes.
        settings: image size and nuisance variation.
        return_masks: also return the bool ``(N, H, W)`` mask of pixels inside the object.
        device: where to compute and return the images.

    Returns:
        uint8 images ``(N, 3, H, W)``, or ``(images, masks)`` with ``return_masks``.
    """
    settings.validate()
    codes = _check_codes(codes)
    device = torch.device(device)
    n, size = codes.shape[0], settings.image_size
    pixels = size * size
    images = torch.empty(n, 3, pixels, dtype=torch.uint8, device=device)
    masks = torch.empty(n, pixels, dtype=torch.bool, device=device) if return_masks else None

    all_params = {k: v.to(device) for k, v in _object_params(codes, _draw_params(n, seed), settings).items()}
    all_keys = (codes[:, 0] * len(PATTERNS) + codes[:, 2]).to(device)
    coords = torch.arange(size, dtype=torch.float32, device=device) + (0.5 - size / 2.0)  # pixel centres
    grid_x, grid_y = coords.view(1, 1, size), coords.view(1, size, 1)  # (1, 1, W), (1, H, 1)
    tile = _tile_size(settings, device)
    work = _Workspace(min(tile, max(n, 1)), size, device)
    chunk = min(settings.chunk_size, max(n, 1))
    chunk_rgb = torch.empty(chunk, 3, pixels, dtype=torch.uint8, device=device)
    chunk_mask = torch.empty(chunk, pixels, dtype=torch.bool, device=device) if return_masks else None

    threads = torch.get_num_threads() if device.type == "cpu" and settings.noise_std > 0 else 1
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    noise_source = _BlockNoise(seed, pixels, device, pool) if settings.noise_std > 0 else None

    with torch.no_grad(), pool if pool is not None else nullcontext():
        for c0 in range(0, n, settings.chunk_size):
            c1 = min(n, c0 + settings.chunk_size)
            # Sorting by (shape, pattern) makes each group a contiguous slice: views, no gathers.
            order = torch.argsort(all_keys[c0:c1], stable=True)  # (C,) chunk-local
            noise = noise_source.rows(c0, c1) if noise_source is not None else None
            # Tiles are written in sorted order and un-sorted once per chunk: a row gather is far
            # cheaper than scattering every tile into the output.
            sorted_rgb = chunk_rgb[: c1 - c0]
            sorted_mask = chunk_mask[: c1 - c0] if chunk_mask is not None else None
            for t0 in range(0, c1 - c0, tile):
                t1 = min(c1 - c0, t0 + tile)
                local = order[t0:t1]
                index = local + c0  # (B,) positions in the output
                # index_select: several times faster than advanced indexing for row gathers on CPU.
                params = {k: v.index_select(0, index) for k, v in all_params.items()}
                tile_noise = None if noise is None else torch.index_select(noise, 0, local, out=work.noise[: t1 - t0])
                tile_mask = sorted_mask[t0:t1] if sorted_mask is not None else None
                keys = all_keys.index_select(0, index)
                _render_tile(params, keys, tile_noise, grid_x, grid_y, settings, work, sorted_rgb[t0:t1], tile_mask)
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(c1 - c0, device=device)
            torch.index_select(sorted_rgb, 0, inverse, out=images[c0:c1])
            if masks is not None:
                torch.index_select(sorted_mask, 0, inverse, out=masks[c0:c1])

    images = images.view(n, 3, size, size)
    if masks is not None:
        return images, masks.view(n, size, size)
    return images


__all__ = ["RENDER_VERSION", "RenderSettings", "render", "SIZE_SCALES", "MAX_SCALE_JITTER", "DARK_SHADE"]

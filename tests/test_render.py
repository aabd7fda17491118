"""The attribute-world renderer puts every attribute into the pixels, deterministically; the cache is safe."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

from continual.stream import cache as cache_module
from continual.stream.attributes import COLOURS, PALETTE, PATTERNS, SHAPES, SIZES
from continual.stream.cache import atomic_torch_save, cached_render
from continual.stream.render import DARK_SHADE, RENDER_VERSION, RenderSettings, render

# No pose, scale or colour jitter: the object sits unrotated at the centre in its palette colour.
STILL_FIELDS = {"rotation": False, "position_jitter": 0.0, "scale_jitter": 0.0, "hue_jitter": 0.0}
STILL = RenderSettings(**STILL_FIELDS)
PLAIN, STRIPES, DOTS, CHECKS = (PATTERNS.index(p) for p in ("plain", "stripes", "dots", "checks"))
SMALL, LARGE = SIZES.index("small"), SIZES.index("large")


def all_codes(repeat: int = 1) -> torch.Tensor:
    """Every (shape, colour, pattern, size) combination, ``repeat`` times: (512 * repeat, 4)."""
    grid = torch.tensor(list(itertools.product(*(range(len(v)) for v in (SHAPES, COLOURS, PATTERNS, SIZES)))))
    return grid.repeat(repeat, 1)


def codes_of(shape: int | None = None, colour: int = 0, pattern: int = PLAIN, size: int = LARGE) -> torch.Tensor:
    """One code per shape (if ``shape`` is None) or the single given code: (8 or 1, 4)."""
    shapes = range(len(SHAPES)) if shape is None else [shape]
    return torch.tensor([(s, colour, pattern, size) for s in shapes])


def interior(mask: torch.Tensor) -> torch.Tensor:
    """Mask pixels whose 4 neighbours are inside too: no anti-aliased edge pixels. (N, H, W) bool."""
    inner = mask.clone()
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[:, :, 1:] &= mask[:, :, :-1]
    inner[:, :, :-1] &= mask[:, :, 1:]
    return inner


# --- determinism and format ---------------------------------------------------------------------


def test_same_seed_same_bytes_different_seed_different_images():
    codes = all_codes()
    first = render(codes, seed=3)
    assert torch.equal(first, render(codes, seed=3))
    other = render(codes, seed=4)
    differs = (first != other).flatten(1).any(1)
    assert differs.all(), "every image must change with the seed (pose and noise are per image)"


def test_output_independent_of_chunk_size_and_of_the_other_images():
    codes = all_codes()
    reference, ref_masks = render(codes, 11, return_masks=True)
    for chunk in (1, 37, 300):
        images, masks = render(codes, 11, RenderSettings(chunk_size=chunk), return_masks=True)
        assert torch.equal(images, reference) and torch.equal(masks, ref_masks), chunk
    # An image depends on its own code, the seed and its index only.
    assert torch.equal(render(codes[:40], 11), reference[:40])
    changed = codes.clone()
    changed[7] = torch.tensor([6, 7, 3, 1])
    keep = torch.arange(len(codes)) != 7
    assert torch.equal(render(changed, 11)[keep], reference[keep])


def test_output_independent_of_the_thread_count():
    codes = all_codes()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = render(codes, 13)
        torch.set_num_threads(2)
        assert torch.equal(render(codes, 13), single)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("size", [32, 64, 17])
def test_shapes_and_dtypes(size):
    codes = all_codes()[::5]
    images, masks = render(codes, 0, RenderSettings(image_size=size), return_masks=True)
    assert images.shape == (len(codes), 3, size, size) and images.dtype == torch.uint8
    assert masks.shape == (len(codes), size, size) and masks.dtype == torch.bool
    assert masks.flatten(1).any(1).all(), "every image shows its object"
    assert render(codes[:0], 0).shape == (0, 3, 32, 32)


def test_scene_scales_with_image_size():
    """The same seed gives the same scene at 32 and 64 pixels: the 64 mask pooled to 32 matches."""
    codes = all_codes()[::3]
    _, small = render(codes, 2, RenderSettings(image_size=32), return_masks=True)
    _, big = render(codes, 2, RenderSettings(image_size=64), return_masks=True)
    pooled = torch.nn.functional.avg_pool2d(big.float().unsqueeze(1), 2).squeeze(1) > 0.5
    agreement = (pooled == small).float().mean().item()
    assert agreement > 0.97


# --- the attributes are in the pixels -----------------------------------------------------------


def test_colour_of_mask_pixels_is_nearest_to_own_palette_entry():
    codes = torch.tensor([(s, c, PLAIN, z) for s in range(8) for c in range(8) for z in range(2)]).repeat(2, 1)
    images, masks = render(codes, 5, return_masks=True)
    pixels = images.float().div(255).permute(0, 2, 3, 1)  # (N, H, W, 3)
    weights = masks.float().unsqueeze(-1)
    mean_rgb = (pixels * weights).sum((1, 2)) / weights.sum((1, 2))  # (N, 3)
    nearest = torch.cdist(mean_rgb, torch.tensor(PALETTE)).argmin(1)
    assert torch.equal(nearest, codes[:, 1])


def test_unjittered_plain_interior_is_exactly_the_palette_colour():
    codes = torch.tensor([(0, c, PLAIN, LARGE) for c in range(8)])
    images, masks = render(codes, 0, STILL, return_masks=True)
    inner = interior(masks)
    for k in range(8):
        expected = torch.tensor([round(v * 255) for v in PALETTE[k]], dtype=torch.uint8)
        assert (images[k].permute(1, 2, 0)[inner[k]] == expected).all()


def test_hue_jitter_shifts_each_image_colour_within_its_bound():
    jitter = 0.04
    codes = torch.tensor([(0, c, PLAIN, LARGE) for c in range(7)]).repeat(6, 1)  # no white: 0.95 + 0.04 clips
    images, masks = render(codes, 6, RenderSettings(hue_jitter=jitter, rotation=False), return_masks=True)
    inner = interior(masks)
    offsets = []
    for k, c in enumerate(codes[:, 1].tolist()):
        pixels = images[k].permute(1, 2, 0)[inner[k]].float()  # (M, 3)
        assert (pixels == pixels[0]).all(), "one colour per image"
        offsets.append(pixels[0] / 255 - torch.tensor(PALETTE[c]))
    offsets = torch.stack(offsets)  # (N, 3)
    assert offsets.abs().max() <= jitter + 0.5 / 255 + 1e-6
    assert offsets.std(0).min() > jitter / 4, "the jitter is drawn per image and per channel"


def test_position_jitter_and_rotation_show_in_the_masks():
    codes = torch.tensor([(SHAPES.index("square"), 0, PLAIN, LARGE)] * 64)
    half = 16.0
    centroids = {}
    for jitter in (0.0, 0.15):
        _, masks = render(codes, 12, RenderSettings(position_jitter=jitter), return_masks=True)
        centroids[jitter] = torch.stack([m.nonzero().float().mean(0) for m in masks]) + 0.5 - half  # (N, 2)
    assert centroids[0.0].abs().max() < 0.5
    spread = centroids[0.15].abs().amax(0)  # (2,) largest offset along y and along x
    assert (spread > 0.5 * 0.15 * half).all() and (spread < 0.15 * half + 1.0).all(), spread
    # An axis-aligned square fills its bounding box; a rotated one fills as little as half of it.
    fill = {}
    for rotation in (False, True):
        _, masks = render(codes, 12, RenderSettings(rotation=rotation), return_masks=True)
        rows, cols = masks.any(2), masks.any(1)  # (N, H), (N, W)
        box = rows.sum(1) * cols.sum(1)
        fill[rotation] = masks.flatten(1).sum(1) / box
    assert fill[False].min() > 0.9 and fill[True].min() < 0.6


def test_every_small_object_is_smaller_than_every_large_one_of_its_shape():
    codes = all_codes(repeat=2)
    _, masks = render(codes, 9, return_masks=True)
    area = masks.flatten(1).sum(1)
    for shape in range(len(SHAPES)):
        of_shape = codes[:, 0] == shape
        small = area[of_shape & (codes[:, 3] == SMALL)]
        large = area[of_shape & (codes[:, 3] == LARGE)]
        assert small.max() < large.min(), SHAPES[shape]


@pytest.mark.parametrize("size", [SMALL, LARGE])
def test_unrotated_shapes_have_distinct_masks(size):
    _, masks = render(codes_of(size=size), 0, STILL, return_masks=True)
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    union = flat.sum(1, keepdim=True) + flat.sum(1) - inter
    iou = inter / union
    off_diagonal = iou[~torch.eye(len(SHAPES), dtype=torch.bool)]
    # The closest pair, circle and hexagon, differs by the hexagon's corners only.
    assert off_diagonal.max() < 0.92


@pytest.mark.parametrize("size", [SMALL, LARGE])
def test_ring_has_a_hole_and_circle_does_not(size):
    ring, circle = SHAPES.index("ring"), SHAPES.index("circle")
    _, masks = render(torch.tensor([(ring, 0, PLAIN, size), (circle, 0, PLAIN, size)]), 0, STILL, return_masks=True)
    centre = masks[:, 15:17, 15:17]  # the four pixels around the image centre
    assert not centre[0].any() and centre[1].all()


def test_shapes_are_recognisable_under_rotation_and_jitter():
    """Nearest-neighbour (mask IoU) against renders of another seed is far above chance (1/8)."""
    settings = RenderSettings(position_jitter=0.0)  # rotation and scale jitter stay on
    per_shape_reference, per_shape_query = 96, 24
    accuracy = {}
    for size in (SMALL, LARGE):
        ref_codes = codes_of(size=size).repeat(per_shape_reference, 1)
        query_codes = codes_of(size=size).repeat(per_shape_query, 1)
        _, ref = render(ref_codes, 100 + size, settings, return_masks=True)
        _, query = render(query_codes, 200 + size, settings, return_masks=True)
        ref, query = ref.flatten(1).float(), query.flatten(1).float()
        inter = query @ ref.T
        iou = inter / (query.sum(1, keepdim=True) + ref.sum(1) - inter)
        predicted = ref_codes[iou.argmax(1), 0]
        accuracy[size] = (predicted == query_codes[:, 0]).float().mean().item()
    assert accuracy[LARGE] > 0.9 and accuracy[SMALL] > 0.7, accuracy


def test_patterns_add_colour_variation_inside_the_object():
    codes = torch.tensor([(s, c, p, LARGE) for s in range(8) for c in range(8) for p in range(4)])
    images, masks = render(codes, 1, return_masks=True)
    inner = interior(masks)
    spread = torch.empty(len(codes))
    for k in range(len(codes)):
        pixels = images[k].permute(1, 2, 0)[inner[k]].float()  # (M, 3)
        spread[k] = pixels.std(0).mean()
    pattern = codes[:, 2]
    plain = spread[pattern == PLAIN]
    assert plain.max() < 3.0, "a plain object is one flat colour (up to anti-aliasing next to the edge)"
    for p in (STRIPES, DOTS, CHECKS):
        assert spread[pattern == p].min() > 10.0, PATTERNS[p]


def _dark_maps(pattern: int, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Unrotated large squares of 7 colours (not white) with ``pattern``: per image, whether each
    interior pixel is closer to the dark shade than to the object colour, cropped to the interior's
    bounding box (7, h, w), and the fraction of such pixels per image (7,)."""
    squares = torch.tensor([(SHAPES.index("square"), c, pattern, LARGE) for c in range(7)])
    images, masks = render(squares, 0, RenderSettings(image_size=size, **STILL_FIELDS), return_masks=True)
    inner = interior(masks)
    pixels = images.permute(0, 2, 3, 1).float() / 255  # (7, H, W, 3)
    colour = torch.tensor(PALETTE[:7]).view(7, 1, 1, 3)
    dark = (pixels - colour * DARK_SHADE).norm(dim=-1) < (pixels - colour).norm(dim=-1)  # (7, H, W)
    fraction = (dark & inner).flatten(1).sum(1) / inner.flatten(1).sum(1)
    rows, cols = inner.any(0).any(1).nonzero().squeeze(1), inner.any(0).any(0).nonzero().squeeze(1)
    block = dark[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    assert inner[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all(), "a square's interior is its bounding box"
    return block, fraction


def test_patterns_keep_most_pixels_in_the_object_colour():
    fractions = {p: _dark_maps(p)[1] for p in range(4)}
    assert (fractions[PLAIN] == 0).all()
    for p in (STRIPES, DOTS, CHECKS):
        assert (fractions[p] > 0.05).all() and (fractions[p] < 0.5).all(), (PATTERNS[p], fractions[p])


def test_patterns_have_their_own_structure():
    """At 64x64 (scale 2) the unrotated periods are whole pixels: stripes 9, dots 11, check cells 8."""
    stripes, _ = _dark_maps(STRIPES)
    assert (stripes == stripes[:, :1]).all(), "stripes are constant along y (whole columns)"
    assert torch.equal(stripes[:, :, 9:], stripes[:, :, :-9]) and stripes.any()
    dots, _ = _dark_maps(DOTS)
    assert torch.equal(dots[:, 11:], dots[:, :-11]) and torch.equal(dots[:, :, 11:], dots[:, :, :-11])
    assert not dots.all(1).any() and not dots.all(2).any(), "dots are isolated, not bands"
    checks, _ = _dark_maps(CHECKS)
    assert torch.equal(checks[:, 8:, 8:], checks[:, :-8, :-8]), "diagonal neighbour cells match"
    assert not (checks[:, :, 8:] & checks[:, :, :-8]).any(), "side neighbour cells alternate"
    assert not (checks[:, 8:] & checks[:, :-8]).any()
    # Checks darken a clearly larger share than the sparse dots, also when rotated.
    codes = torch.tensor([(s, c, p, LARGE) for s in range(8) for c in range(7) for p in (DOTS, CHECKS)])
    images, masks = render(codes, 3, RenderSettings(hue_jitter=0.0), return_masks=True)
    pixels = images.permute(0, 2, 3, 1).float() / 255
    colour = torch.tensor(PALETTE)[codes[:, 1]].view(-1, 1, 1, 3)
    dark = (pixels - colour * DARK_SHADE).norm(dim=-1) < (pixels - colour).norm(dim=-1)
    share = (dark & masks).flatten(1).sum(1) / masks.flatten(1).sum(1)
    assert share[codes[:, 2] == CHECKS].mean() > 1.5 * share[codes[:, 2] == DOTS].mean()


def test_background_noise_has_the_configured_std():
    codes = codes_of(size=SMALL)
    for std in (0.0, 0.06):
        images, masks = render(codes, 4, RenderSettings(noise_std=std), return_masks=True)
        corner = images[:, 0, :5, :5].float().flatten(1)  # far from every small object
        assert not masks[:, :5, :5].any()
        measured = corner.std(1).mean().item() / 255
        assert math.isclose(measured, std, abs_tol=0.012), (std, measured)


def test_pose_is_independent_of_the_attributes():
    """Same seed and index => same pose, whatever the code: every shape is centred where the circle is."""
    _, masks = render(codes_of(size=LARGE), 8, RenderSettings(), return_masks=True)
    _, circles = render(torch.tensor([(0, 0, PLAIN, LARGE)] * 8), 8, return_masks=True)
    for k in range(8):
        # Every shape is centred on its own centre, so mask centroids agree up to edge clipping.
        offset = masks[k].nonzero().float().mean(0) - circles[k].nonzero().float().mean(0)
        assert offset.abs().max() < 1.5, SHAPES[k]


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("image_size", 15),
        ("image_size", 32.0),
        ("position_jitter", -0.1),
        ("scale_jitter", -0.01),
        ("scale_jitter", 0.3),  # small and large sizes would overlap
        ("hue_jitter", -0.04),
        ("noise_std", float("nan")),
        ("chunk_size", 0),
        ("rotation", 1),
    ],
)
def test_bad_settings_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        RenderSettings(**{field: value})


@pytest.mark.parametrize(
    "codes, message",
    [
        (torch.zeros(3, 3, dtype=torch.long), "shape"),
        (torch.tensor([[8, 0, 0, 0]]), "shape"),
        (torch.tensor([[0, 0, 0, 2]]), "size"),
        (torch.tensor([[0, -1, 0, 0]]), "colour"),
        (torch.zeros(2, 4), "integer"),
    ],
)
def test_bad_codes_raise(codes, message):
    with pytest.raises(ValueError, match=message):
        render(codes, 0)


# --- the disk cache -----------------------------------------------------------------------------


def _world_files(directory):
    return sorted(directory.glob("world-*.pt"))


def test_cache_second_call_reads_the_file(tmp_path, monkeypatch):
    codes, settings = all_codes()[::7], RenderSettings()
    first = cached_render(codes, 3, settings, tmp_path / "nested" / "dir")
    files = _world_files(tmp_path / "nested" / "dir")
    assert len(files) == 1 and len(files[0].stem) == len("world-") + 16
    assert torch.equal(first, render(codes, 3, settings))

    def fail(*args, **kwargs):
        raise AssertionError("rendered although the world was cached")

    monkeypatch.setattr(cache_module, "render", fail)
    again = cached_render(codes, 3, settings, tmp_path / "nested" / "dir")
    assert torch.equal(again, first)
    # chunk_size does not change the pixels, so it shares the file.
    assert torch.equal(cached_render(codes, 3, RenderSettings(chunk_size=5), tmp_path / "nested" / "dir"), first)


def test_cache_key_covers_settings_seed_codes_and_version(tmp_path, monkeypatch):
    codes = all_codes()[::9]
    cached_render(codes, 0, RenderSettings(), tmp_path)
    cached_render(codes, 0, RenderSettings(noise_std=0.0), tmp_path)
    cached_render(codes, 1, RenderSettings(), tmp_path)
    cached_render(codes[1:], 0, RenderSettings(), tmp_path)
    cached_render(codes.flip(0), 0, RenderSettings(), tmp_path)  # same shape, other codes
    assert len(_world_files(tmp_path)) == 5
    monkeypatch.setattr(cache_module, "RENDER_VERSION", RENDER_VERSION + 1)
    cached_render(codes, 0, RenderSettings(), tmp_path)
    assert len(_world_files(tmp_path)) == 6
    assert sorted(tmp_path.iterdir()) == _world_files(tmp_path), "no temporary files are left behind"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupt_cache_file_is_rerendered_with_a_warning(tmp_path, damage):
    codes, settings = all_codes()[::11], RenderSettings()
    expected = cached_render(codes, 2, settings, tmp_path)
    (path,) = _world_files(tmp_path)
    if damage == "garbage":
        path.write_bytes(b"not a torch file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        torch.save(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), path)
    with pytest.warns(UserWarning, match="re-rendering"):
        again = cached_render(codes, 2, settings, tmp_path)
    assert torch.equal(again, expected)
    # The bad file was overwritten: the next call loads silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(cached_render(codes, 2, settings, tmp_path), expected)


def test_no_cache_dir_just_renders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    codes = all_codes()[::13]
    assert torch.equal(cached_render(codes, 0, RenderSettings(), None), render(codes, 0))
    assert not list(tmp_path.rglob("*"))


def test_atomic_torch_save_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "x.pt"
    atomic_torch_save({"a": torch.arange(3)}, path)
    atomic_torch_save({"a": torch.arange(5)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(5))
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]

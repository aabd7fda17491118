"""Omniglot as a stream: handwritten characters arriving alphabet by alphabet.

Data: the two "minimal" background archives of Lake et al. (``images_background_small1.zip`` and
``images_background_small2.zip`` from github.com/brendenlake/omniglot, ``python/`` folder), read
straight from the zips (nothing is unpacked, nothing is downloaded). Each archive is checked
against its sha256 before use. Greek and Latin are in both archives with byte-identical character
folders; they are merged by alphabet and character folder name, which leaves 8 alphabets, 242
characters and 20 drawings (one per drawer) of each. The matching stroke archives
(``strokes_background_small{1,2}.zip``) record how each drawing was made; they are optional.

Images are stored as the rest of the project stores them: uint8 ``(N, 1, S, S)``, here with ink
bright (255) on a dark (0) background, downscaled from 105x105 with an antialiasing filter. The
decoded tensor is cached in ``cache_dir`` keyed by the archives' digests and the image size.

The stream (``build_omniglot_stream``) is class-incremental over characters: each experience
brings every character of one or more new alphabets. The alphabet is the abstraction level: it is
the stream's first attribute, so the learner's attribute head predicts the alphabet (a
super-category) alongside the character. With the stroke archives present, the number of pen
strokes (bucketed) is a second attribute: per training image it is that drawing's own count
(``Stream.train_codes``), per category the most common count of its training drawings. Whole
alphabets can be held out of the stream (``Stream.novel``) for one-shot trials on new alphabets.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from continual.stream.attributes import AttributeSpace
from continual.stream.cache import atomic_torch_save
from continual.stream.stream import NovelImages, Stream, data_stream_kwargs

# The digests published with the data (its README); the archives never change upstream.
EXPECTED_SHA256 = {
    "images_background_small1.zip": "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2.zip": "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
}
EXPECTED_STROKES_SHA256 = {
    "strokes_background_small1.zip": "8cb3960fb6cf4ccf5f064ad83169f828c36c36782a0f6e7faacb7ecfae4468a2",
    "strokes_background_small2.zip": "345bf2141efbea062833dbb2828abbc23d9e07825e46f2afdd4daecddfed6e78",
}
SOURCE = "github.com/brendenlake/omniglot (python/ folder)"
# Bump when decoding or downscaling changes, so that old cache files are not read back.
PREPROCESS_VERSION = 1
# Bump when stroke parsing or the layout of the stroke-count cache changes.
STROKES_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[2]
# Values of the "strokes" attribute: counts above 4 are rare (457 of 4840 drawings) and pooled.
STROKE_BUCKETS = ("1", "2", "3", "4", "5+")

_PNG_NAME = re.compile(r"^(\d+)_(\d+)\.png$")  # <image id>_<drawer>.png
_TXT_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")  # <image id>_<drawer>.txt, same stem as its image


class OmniglotData(NamedTuple):
    """Every drawing of the merged archives; unpacks like a tuple."""

    images: torch.Tensor  # (N, 1, S, S) uint8, ink 255, background 0
    alphabet: torch.Tensor  # (N,) long index into alphabet_names
    character: torch.Tensor  # (N,) long index into character_names
    drawer: torch.Tensor  # (N,) long drawer number - 1 (0..19)
    alphabet_names: list[str]  # sorted
    character_names: list[str]  # "Alphabet/characterNN", grouped by alphabet, in folder order


# --------------------------------------------------------------------------------------------
# files and checksums
# --------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_data_root(data_root: str | os.PathLike) -> Path:
    """``data_root`` as given when it exists; a relative path that does not exist from the current
    directory is tried against the repository root, so the config default works from anywhere."""
    path = Path(data_root).expanduser()
    if path.is_absolute() or path.exists():
        return path
    from_repo = REPO_ROOT / path
    return from_repo if from_repo.exists() else path


def verify_archives(data_root: str | os.PathLike) -> dict[str, Path]:
    """Paths of the two archives after checking that they exist and match their sha256.

    Raises FileNotFoundError naming the missing folder or file and where to get it, and
    ValueError naming the file, the expected and the actual digest.
    """
    given = Path(data_root).expanduser()
    root = resolve_data_root(given)
    tried = f"{root}" + ("" if root.is_absolute() or given.is_absolute() else f" (also tried {REPO_ROOT / given})")
    hint = (f"get images_background_small1.zip and images_background_small2.zip from {SOURCE} and put them "
            f"there, or point benchmark.data_root (or $CONTINUAL_OMNIGLOT) at the folder that holds them")
    if not root.is_dir():
        raise FileNotFoundError(f"Omniglot data folder {tried} does not exist: {hint}")
    paths = {}
    for name, expected in EXPECTED_SHA256.items():
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"Omniglot archive {path} is missing: {hint}")
        _check_digest(path, expected)
        paths[name] = path
    return paths


def _check_digest(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"Omniglot archive {path} is corrupt or not the published file: sha256 "
                         f"expected {expected}, got {actual}; download it again from {SOURCE}")


def verify_stroke_archives(data_root: str | os.PathLike) -> dict[str, Path] | None:
    """Paths of the two stroke archives after checking their sha256; None when one is missing.

    Strokes are optional side information, so a missing archive only warns (naming it) and turns
    strokes off; a present but corrupt one raises ValueError naming the file and both digests.
    """
    root = resolve_data_root(data_root)
    paths = {name: root / name for name in EXPECTED_STROKES_SHA256}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        what = f"archives {' and '.join(missing)} are" if len(missing) > 1 else f"archive {missing[0]} is"
        warnings.warn(f"Omniglot stroke {what} missing: strokes are off (the stream has only the alphabet "
                      f"attribute); get {' and '.join(EXPECTED_STROKES_SHA256)} from {SOURCE} to use them, or "
                      f"set benchmark.strokes=false to silence this", stacklevel=3)
        return None
    for name, path in paths.items():
        _check_digest(path, EXPECTED_STROKES_SHA256[name])
    return paths


# --------------------------------------------------------------------------------------------
# decoding and preprocessing (shared with the one-shot protocol in continual.metrics.few_shot)
# --------------------------------------------------------------------------------------------


def decode_ink(data: bytes) -> np.ndarray:
    """A PNG's ink as uint8 ``(H, W)``: 255 where the pen was, 0 on the paper."""
    with Image.open(io.BytesIO(data)) as im:
        # Omniglot PNGs are 1-bit with black ink on white; "L" also takes grey or colour files.
        return 255 - np.asarray(im.convert("L"), dtype=np.uint8)


def downscale(ink: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 ``(N, 1, H, W)`` to uint8 ``(N, 1, S, S)`` with an antialiasing filter, in one batched call."""
    if ink.shape[-1] == image_size and ink.shape[-2] == image_size:
        return ink
    # antialias=True widens the bilinear kernel to the downscale factor: thin 1-bit strokes become
    # grey lines instead of aliasing away (plain bilinear would sample about 1 in 4 pixels at 105->28).
    # Straight on uint8: torch's native uint8 kernel is ~4x faster than going through float.
    return F.interpolate(ink.contiguous(), size=(image_size, image_size), mode="bilinear", antialias=True,
                         align_corners=False)


def preprocess_pngs(pngs: Sequence[bytes], image_size: int) -> torch.Tensor:
    """PNG files to uint8 ``(N, 1, S, S)`` images, ink bright: the one preprocessing for every Omniglot image."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    arrays = [decode_ink(p) for p in pngs]
    out = torch.empty((len(arrays), 1, image_size, image_size), dtype=torch.uint8)
    # Batch by source size (all 105x105 in Omniglot) so the resize is one call per size.
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, a in enumerate(arrays):
        by_shape.setdefault(a.shape, []).append(i)
    for idx in by_shape.values():
        ink = torch.from_numpy(np.stack([arrays[i] for i in idx]))[:, None]  # (n, 1, H, W)
        out[idx] = downscale(ink, image_size)
    return out


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _read_archive(path: Path, suffix: str = ".png", read: bool = True) -> dict[tuple[str, str], dict[str, bytes]]:
    """``{(alphabet, character folder): {file name: bytes}}`` of one archive's ``suffix`` files
    (".png" images or ".txt" strokes); ``read=False`` lists the names only, with empty bytes."""
    pattern = {".png": _PNG_NAME, ".txt": _TXT_NAME}[suffix]
    folders: dict[tuple[str, str], dict[str, bytes]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                parts = info.filename.strip("/").split("/")
                # macOS metadata (__MACOSX/._name, .DS_Store) is not data.
                if info.is_dir() or not parts[-1].endswith(suffix) or parts[0] == "__MACOSX":
                    continue
                if len(parts) != 4 or not pattern.match(parts[3]):
                    raise ValueError(f"unexpected entry {info.filename!r} in {path}: expected "
                                     f"<top>/<Alphabet>/characterNN/<id>_<drawer>{suffix}")
                folders.setdefault((parts[1], parts[2]), {})[parts[3]] = zf.read(info) if read else b""
    except zipfile.BadZipFile as err:
        # Only reachable for an archive whose digest matched, i.e. never with the published files.
        raise ValueError(f"Omniglot archive {path} is not a readable zip ({err})") from err
    return folders


def _merge(archives: dict[str, dict[tuple[str, str], dict[str, bytes]]]) -> dict[tuple[str, str], dict[str, bytes]]:
    """One entry per (alphabet, character): identical folders found in several archives count once."""
    merged: dict[tuple[str, str], dict[str, bytes]] = {}
    source: dict[tuple[str, str], str] = {}
    for name in sorted(archives):
        for key, files in archives[name].items():
            if key not in merged:
                merged[key], source[key] = files, name
            elif merged[key] != files:
                # Same name, different drawings: merging would silently mix two characters.
                raise ValueError(f"character folder {key[0]}/{key[1]} differs between {source[key]} and {name}")
    return merged


def _cache_file(cache_dir: str | os.PathLike, image_size: int) -> Path:
    header = {"version": PREPROCESS_VERSION, "image_size": int(image_size), "sha256": EXPECTED_SHA256}
    key = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()
    return Path(cache_dir) / f"omniglot-{key[:16]}.pt"


def _from_cache(path: Path, image_size: int) -> OmniglotData | None:
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
        data = OmniglotData(**blob)
        n = len(data.alphabet)
        ok = (data.images.dtype == torch.uint8 and tuple(data.images.shape) == (n, 1, image_size, image_size)
              and len(data.character) == n == len(data.drawer))
    except Exception as err:  # truncated, foreign or old-format file: decode again
        warnings.warn(f"unreadable Omniglot cache {path} ({type(err).__name__}: {err}); decoding again", stacklevel=3)
        return None
    if not ok:
        warnings.warn(f"Omniglot cache {path} does not hold what was expected; decoding again", stacklevel=3)
        return None
    return data


def load_omniglot(data_root: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                  image_size: int = 28) -> OmniglotData:
    """Every drawing of the two minimal background archives, merged, decoded and downscaled.

    The archives' checksums are verified on every call (milliseconds); the decoded images are
    read from ``cache_dir`` when it holds them, else decoded (a few seconds) and cached.
    """
    paths = verify_archives(data_root)
    cache = _cache_file(cache_dir, image_size) if cache_dir is not None else None
    if cache is not None and cache.exists():
        data = _from_cache(cache, image_size)
        if data is not None:
            return data

    folders = _merge({name: _read_archive(path) for name, path in paths.items()})
    alphabet_names = sorted({a for a, _ in folders})
    keys = sorted(folders, key=lambda k: (alphabet_names.index(k[0]), k[1]))
    pngs, alphabet, character, drawer = [], [], [], []
    for c, key in enumerate(keys):
        for fname in sorted(folders[key], key=lambda f: int(_PNG_NAME.match(f).group(2))):
            pngs.append(folders[key][fname])
            alphabet.append(alphabet_names.index(key[0]))
            character.append(c)
            drawer.append(int(_PNG_NAME.match(fname).group(2)) - 1)
    data = OmniglotData(
        images=preprocess_pngs(pngs, image_size),
        alphabet=torch.tensor(alphabet, dtype=torch.long),
        character=torch.tensor(character, dtype=torch.long),
        drawer=torch.tensor(drawer, dtype=torch.long),
        alphabet_names=alphabet_names,
        character_names=[f"{a}/{ch}" for a, ch in keys],
    )
    if cache is not None:
        atomic_torch_save(data._asdict(), cache)
    return data


# --------------------------------------------------------------------------------------------
# strokes: how each drawing was made, side information for training only
# --------------------------------------------------------------------------------------------


def count_strokes(text: bytes, where: str = "stroke file") -> int:
    """Number of pen strokes in one stroke file: its ``BREAK`` lines (one after each stroke)."""
    lines = [line.strip() for line in text.decode("latin-1").splitlines() if line.strip()]
    if not lines or lines[0] != "START":
        raise ValueError(f"{where}: expected a stroke file that starts with START, got {lines[:1]}")
    n = lines.count("BREAK")
    if n == 0:
        raise ValueError(f"{where}: no stroke (no BREAK line)")
    return n


def read_stroke_counts(paths: dict[str, Path]) -> dict[tuple[str, str, str], int]:
    """``{(alphabet, character folder, file stem): number of strokes}`` over the given stroke
    archives; folders found in several archives (Greek, Latin) are merged like the images."""
    folders = _merge({name: _read_archive(path, ".txt") for name, path in paths.items()})
    return {(a, ch, fname[:-4]): count_strokes(text, f"stroke file {a}/{ch}/{fname}")
            for (a, ch), files in folders.items() for fname, text in files.items()}


def _match_strokes(data: OmniglotData, counts: dict[tuple[str, str, str], int],
                   image_paths: dict[str, Path]) -> torch.Tensor:
    """``(N,)`` stroke counts in ``data``'s order: each image takes the stroke file with its stem."""
    # Only the image archives' names are read (no decoding): they give each image's file stem.
    images = _merge({name: _read_archive(path, ".png", read=False) for name, path in image_paths.items()})
    stem_of = {(f"{a}/{ch}", int(_PNG_NAME.match(f).group(2)) - 1): f[:-4]
               for (a, ch), files in images.items() for f in files}
    out = torch.empty(len(data.drawer), dtype=torch.long)
    for i, (c, d) in enumerate(zip(data.character.tolist(), data.drawer.tolist())):
        name = data.character_names[c]
        key = (*name.split("/"), stem_of[(name, d)])
        if key not in counts:
            raise ValueError(f"no stroke file for image {name}/{key[2]}.png in "
                             f"{' or '.join(EXPECTED_STROKES_SHA256)} (expected {name}/{key[2]}.txt)")
        out[i] = counts[key]
    return out


def _strokes_cache_file(cache_dir: str | os.PathLike) -> Path:
    # The counts are stored in the images' order, so the image archives are part of the key too.
    header = {"version": STROKES_VERSION, "sha256": EXPECTED_STROKES_SHA256, "images_sha256": EXPECTED_SHA256}
    key = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()
    return Path(cache_dir) / f"omniglot-strokes-{key[:16]}.pt"


def _strokes_from_cache(path: Path, data: OmniglotData) -> torch.Tensor | None:
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
        counts = blob["counts"]
        ok = (blob["character_names"] == data.character_names and torch.equal(blob["character"], data.character)
              and torch.equal(blob["drawer"], data.drawer) and counts.dtype == torch.long
              and counts.shape == data.drawer.shape and bool((counts >= 1).all()))
    except Exception as err:  # truncated, foreign or old-format file: parse again
        warnings.warn(f"unreadable Omniglot stroke cache {path} ({type(err).__name__}: {err}); parsing again",
                      stacklevel=3)
        return None
    if not ok:
        warnings.warn(f"Omniglot stroke cache {path} does not match the images; parsing again", stacklevel=3)
        return None
    return counts


def load_stroke_counts(data_root: str | os.PathLike, data: OmniglotData,
                       cache_dir: str | os.PathLike | None = None) -> torch.Tensor | None:
    """``(N,)`` long number of pen strokes of every drawing in ``data`` (same order), or None (with
    a warning) when a stroke archive is missing.

    The stroke archives' checksums are verified on every call; the counts are read from a small
    file in ``cache_dir`` when it holds them, else parsed from the zips (a few seconds) and cached.
    """
    paths = verify_stroke_archives(data_root)
    if paths is None:
        return None
    cache = _strokes_cache_file(cache_dir) if cache_dir is not None else None
    if cache is not None and cache.exists():
        counts = _strokes_from_cache(cache, data)
        if counts is not None:
            return counts
    counts = _match_strokes(data, read_stroke_counts(paths), verify_archives(data_root))
    if cache is not None:
        atomic_torch_save({"character_names": data.character_names, "character": data.character,
                           "drawer": data.drawer, "counts": counts}, cache)
    return counts


def stroke_bucket(counts: torch.Tensor) -> torch.Tensor:
    """Index into ``STROKE_BUCKETS`` of each stroke count: 1..4 as themselves, 5 and more pooled."""
    return counts.clamp(1, len(STROKE_BUCKETS)) - 1


# --------------------------------------------------------------------------------------------
# the stream
# --------------------------------------------------------------------------------------------


# Fixed by the checksummed archives, so settings can be checked before any file is read.
N_ALPHABETS, N_DRAWERS, SMALLEST_ALPHABET = 8, 20, 17  # Tagalog has 17 characters


def n_alphabet_folds(heldout_alphabets: int, n_alphabets: int = N_ALPHABETS) -> int:
    """How many folds ``heldout_alphabets`` per fold makes of the alphabets (the last may be shorter)."""
    return 1 if heldout_alphabets == 0 else math.ceil(n_alphabets / heldout_alphabets)


def heldout_alphabet_names(alphabet_names: Sequence[str], heldout_alphabets: int, alphabet_fold: int) -> list[str]:
    """The alphabets fold ``alphabet_fold`` holds out: a slice of the *sorted* names, the same for
    every seed, so that fold f's numbers compare across seeds and the folds together cover each
    alphabet exactly once."""
    names = sorted(alphabet_names)
    k = heldout_alphabets
    return names[alphabet_fold * k:(alphabet_fold + 1) * k]


def check_omniglot_settings(n_experiences: int = 4, train_drawers: int = 15, heldout_per_alphabet: int = 2,
                            image_size: int = 28, heldout_alphabets: int = 0, alphabet_fold: int = 0) -> None:
    """Raise ConfigError (a ValueError) naming ``benchmark.<key>`` for an impossible value."""
    from continual.config import ConfigError  # lazy: continual.config imports the registries

    if not 0 <= heldout_alphabets < N_ALPHABETS:
        raise ConfigError(f"config key benchmark.heldout_alphabets must be in 0..{N_ALPHABETS - 1} (at least one "
                          f"of the {N_ALPHABETS} alphabets must stay in the stream), got {heldout_alphabets}")
    folds = n_alphabet_folds(heldout_alphabets)
    if not 0 <= alphabet_fold < folds:
        raise ConfigError(f"config key benchmark.alphabet_fold must be in 0..{folds - 1} (heldout_alphabets="
                          f"{heldout_alphabets} splits the {N_ALPHABETS} sorted alphabets into {folds} "
                          f"fold{'s' if folds > 1 else ''}), got {alphabet_fold}")
    k = heldout_alphabets
    remaining = N_ALPHABETS - len(range(N_ALPHABETS)[alphabet_fold * k:(alphabet_fold + 1) * k])
    if not 1 <= n_experiences <= remaining:
        held = f" ({N_ALPHABETS - remaining} of {N_ALPHABETS} held out by heldout_alphabets/alphabet_fold)" \
            if remaining < N_ALPHABETS else ""
        raise ConfigError(f"config key benchmark.n_experiences must be in 1..{remaining} (at least one alphabet per "
                          f"experience; {remaining} alphabets are in the stream{held}), got {n_experiences}")
    if not 1 <= train_drawers < N_DRAWERS:
        raise ConfigError(f"config key benchmark.train_drawers must be in 1..{N_DRAWERS - 1} (the other "
                          f"drawers of a character are its test images), got {train_drawers}")
    if not 0 <= heldout_per_alphabet < SMALLEST_ALPHABET:
        raise ConfigError(f"config key benchmark.heldout_per_alphabet must be in 0..{SMALLEST_ALPHABET - 1} "
                          f"(the smallest alphabet has {SMALLEST_ALPHABET} characters), got {heldout_per_alphabet}")
    if image_size < 4:
        raise ConfigError(f"config key benchmark.image_size must be >= 4, got {image_size}")


def build_omniglot_stream(data_root: str | os.PathLike, n_experiences: int = 4, train_drawers: int = 15,
                          heldout_per_alphabet: int = 2, image_size: int = 28, seed: int = 0,
                          cache_dir: str | os.PathLike | None = None, heldout_alphabets: int = 0,
                          alphabet_fold: int = 0, strokes: bool = True) -> Stream:
    """A class-incremental stream of characters, whole alphabets per experience.

    - Whole alphabets out (``heldout_alphabets`` = k > 0): fold ``alphabet_fold`` takes the sorted
      alphabet names ``[f*k:(f+1)*k]`` (the last fold may be shorter), the same for every seed. All
      20 drawings of their characters go to ``Stream.novel``, none to the stream (no label, no
      attribute value): they are for Lake-style one-shot trials on new alphabets.
    - The other alphabets are shuffled by ``seed`` and dealt into ``n_experiences`` groups as evenly
      as possible (8 over 3 gives 3, 3, 2); an experience brings every trained character of its alphabets.
    - Held out (never trained): the last ``heldout_per_alphabet`` character folders of every
      stream alphabet, the same for every seed so that few-shot numbers compare across seeds. They
      are new characters of alphabets that are trained, so their alphabet is known, as for the
      world's held-out categories.
    - Per character, ``train_drawers`` of its drawers (drawn by ``seed``) are training images and the
      rest are test images. A held-out character puts all its drawings in the test set: none is
      ever trained on, and few-shot episodes need K support plus some query images per class.
    - Labels in arrival order (experience 0's characters are 0..k-1, ...), held-out ones last.
    - Attributes: the alphabet (values: the stream's alphabets, sorted) and, with ``strokes`` and
      the stroke archives present, the number of pen strokes (``STROKE_BUCKETS``). A training
      image's stroke value is its own (``Stream.train_codes``); a category's (``class_codes``) is
      the most common value over its training drawings (ties: fewer strokes), over all its drawings
      for a held-out character. A missing stroke archive warns and leaves the alphabet alone.

    With ``heldout_alphabets=0`` and ``strokes=False`` the stream is the same as before either existed.
    """
    check_omniglot_settings(n_experiences, train_drawers, heldout_per_alphabet, image_size, heldout_alphabets,
                            alphabet_fold)
    data = load_omniglot(data_root, cache_dir, image_size)
    stroke_counts = load_stroke_counts(data_root, data, cache_dir) if strokes else None  # (N,) or None
    char_alphabet = _character_alphabet(data)  # (n_characters,)
    drawings = torch.bincount(data.character)

    novel_names = heldout_alphabet_names(data.alphabet_names, heldout_alphabets, alphabet_fold)
    kept = [a for a, name in enumerate(data.alphabet_names) if name not in novel_names]  # sorted
    alphabet_code = torch.full((len(data.alphabet_names),), -1, dtype=torch.long)
    alphabet_code[kept] = torch.arange(len(kept))  # data's alphabet index -> attribute value

    gen = torch.Generator().manual_seed(seed)
    # With nothing held out this is randperm(8) over alphabet indices: the stream as it always was.
    order = torch.tensor(kept)[torch.randperm(len(kept), generator=gen)]
    groups = [g.tolist() for g in order.tensor_split(n_experiences)]

    stream_chars: list[list[int]] = []  # per experience, global character indices in label order
    heldout_chars: list[int] = []
    for group in groups:
        chars = []
        for a in group:
            members = (char_alphabet == a).nonzero().squeeze(1).tolist()  # folder order
            cut = len(members) - heldout_per_alphabet
            chars += members[:cut]
            heldout_chars += members[cut:]
        stream_chars.append(chars)
    arrival = [c for chars in stream_chars for c in chars] + heldout_chars
    label_of = torch.full((len(data.character_names),), -1, dtype=torch.long)  # -1: novel alphabet
    label_of[torch.tensor(arrival)] = torch.arange(len(arrival))
    n_stream = len(arrival) - len(heldout_chars)

    # Drawer split per character: random keys ranked within each character. Drawn for every
    # image, novel ones included, so the split does not depend on which alphabets are held out.
    keys = data.character.double() + torch.rand(len(data.character), generator=gen, dtype=torch.double)
    by_char = keys.argsort()
    starts = torch.cumsum(drawings, 0) - drawings
    rank = torch.empty_like(by_char)
    rank[by_char] = torch.arange(len(by_char)) - starts[data.character[by_char]]
    labels = label_of[data.character]  # (N,)
    in_stream = labels >= 0
    is_train = (rank < train_drawers) & in_stream & (labels < n_stream)

    # Sorted by label, then drawer: stable, readable order (the loop shuffles anyway).
    def take(mask: torch.Tensor) -> torch.Tensor:
        idx = mask.nonzero().squeeze(1)
        return idx[(labels[idx] * 1000 + data.drawer[idx]).argsort()]

    train_idx, test_idx = take(is_train), take(~is_train & in_stream)
    train_y, test_y = labels[train_idx], labels[test_idx]
    names = [data.character_names[c] for c in arrival]
    alphabet_of_label = alphabet_code[char_alphabet[torch.tensor(arrival)]]  # (C,)
    attribute_names: tuple[str, ...] = ("alphabet",)
    attribute_values: tuple[tuple[str, ...], ...] = (tuple(data.alphabet_names[a] for a in kept),)
    codes = alphabet_of_label[:, None]  # (C, 1)
    train_codes = None
    bucket = stroke_bucket(stroke_counts) if stroke_counts is not None else None  # (N,)
    if bucket is not None:
        class_bucket = _class_stroke_bucket(labels, bucket, is_train, len(arrival))  # (C,)
        attribute_names += ("strokes",)
        attribute_values += (STROKE_BUCKETS,)
        codes = torch.stack([alphabet_of_label, class_bucket], 1)  # (C, 2)
        train_codes = torch.stack([alphabet_of_label[train_y], bucket[train_idx]], 1)  # (N_train, 2)
    bounds = torch.tensor([0] + [len(c) for c in stream_chars]).cumsum(0).tolist()
    return Stream(
        name="omniglot",
        train_x=data.images[train_idx],
        train_y=train_y,
        test_x=data.images[test_idx],
        test_y=test_y,
        experiences=[list(range(bounds[e], bounds[e + 1])) for e in range(n_experiences)],
        heldout=list(range(n_stream, len(arrival))),
        class_names=names,
        train_counts=torch.bincount(train_y, minlength=n_stream).tolist(),
        attribute_space=AttributeSpace(names=attribute_names, values=attribute_values),
        class_codes=codes,
        fine_grained_pairs=[],
        train_codes=train_codes,
        novel=_novel_images(data, novel_names, bucket) if novel_names else None,
    )


def _class_stroke_bucket(labels: torch.Tensor, bucket: torch.Tensor, is_train: torch.Tensor,
                         n_classes: int) -> torch.Tensor:
    """``(C,)`` most common stroke bucket per label over its training drawings (all its drawings
    when it has none, i.e. held-out characters); ties go to the smaller bucket."""
    n_buckets = len(STROKE_BUCKETS)

    def histogram(mask: torch.Tensor) -> torch.Tensor:
        flat = labels[mask] * n_buckets + bucket[mask]
        return torch.bincount(flat, minlength=n_classes * n_buckets).view(n_classes, n_buckets)  # (C, B)

    train, every = histogram(is_train), histogram(labels >= 0)
    counts = torch.where((train.sum(1) > 0)[:, None], train, every)  # (C, B)
    # argmax returns the first maximum: the smaller bucket on a tie.
    return counts.argmax(1)


def _novel_images(data: OmniglotData, novel_names: list[str], bucket: torch.Tensor | None) -> NovelImages:
    """Every drawing of the held-out alphabets, sorted by (character, drawer)."""
    group_of = torch.full((len(data.alphabet_names),), -1, dtype=torch.long)
    for g, name in enumerate(novel_names):
        group_of[data.alphabet_names.index(name)] = g
    char_group = group_of[_character_alphabet(data)]  # (n_characters,) -1: in the stream
    chars = (char_group >= 0).nonzero().squeeze(1)  # data order: by alphabet, then folder
    local = torch.full_like(char_group, -1)
    local[chars] = torch.arange(len(chars))
    category = local[data.character]  # (N,)
    idx = (category >= 0).nonzero().squeeze(1)
    idx = idx[(category[idx] * 1000 + data.drawer[idx]).argsort()]
    return NovelImages(
        images=data.images[idx],
        category=category[idx],
        group=char_group[data.character[idx]],
        drawer=data.drawer[idx],
        group_names=list(novel_names),
        category_names=[data.character_names[c] for c in chars.tolist()],
        strokes=bucket[idx] if bucket is not None else None,
    )


def _character_alphabet(data: OmniglotData) -> torch.Tensor:
    """``(n_characters,)`` alphabet index of every character."""
    out = torch.empty(len(data.character_names), dtype=torch.long)
    out[data.character] = data.alphabet
    return out


OMNIGLOT_KEYS = ("data_root", "n_experiences", "train_drawers", "heldout_per_alphabet", "image_size",
                 "seed", "cache_dir", "heldout_alphabets", "alphabet_fold", "strokes")


def omniglot_stream_from_dict(cfg: dict) -> Stream:
    """Build the stream from a plain ``benchmark`` config dict, naming any unknown key."""
    return build_omniglot_stream(**data_stream_kwargs(cfg, OMNIGLOT_KEYS, "the folder with the Omniglot archives"))


__all__ = ["EXPECTED_SHA256", "EXPECTED_STROKES_SHA256", "STROKE_BUCKETS", "OmniglotData", "build_omniglot_stream",
           "check_omniglot_settings", "count_strokes", "heldout_alphabet_names", "load_omniglot",
           "load_stroke_counts", "n_alphabet_folds", "omniglot_stream_from_dict", "preprocess_pngs",
           "read_stroke_counts", "resolve_data_root", "sha256_file", "stroke_bucket", "verify_archives",
           "verify_stroke_archives"]

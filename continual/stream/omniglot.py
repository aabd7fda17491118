"""Omniglot as a stream: handwritten characters arriving alphabet by alphabet.

Data: the two "minimal" background archives of Lake et al. (``images_background_small1.zip`` and
``images_background_small2.zip`` from github.com/brendenlake/omniglot, ``python/`` folder), read
straight from the zips (nothing is unpacked, nothing is downloaded). Each archive is checked
against its sha256 before use. Greek and Latin are in both archives with byte-identical character
folders; they are merged by alphabet and character folder name, which leaves 8 alphabets, 242
characters and 20 drawings (one per drawer) of each.

Images are stored as the rest of the project stores them: uint8 ``(N, 1, S, S)``, here with ink
bright (255) on a dark (0) background, downscaled from 105x105 with an antialiasing filter. The
decoded tensor is cached in ``cache_dir`` keyed by the archives' digests and the image size.

The stream (``build_omniglot_stream``) is class-incremental over characters: each experience
brings every character of one or more new alphabets. The alphabet is the abstraction level: it is
the stream's single attribute, so the learner's attribute head predicts the alphabet (a
super-category) alongside the character.
"""

from __future__ import annotations

import hashlib
import io
import json
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
from continual.stream.stream import Stream

# The digests published with the data (its README); the archives never change upstream.
EXPECTED_SHA256 = {
    "images_background_small1.zip": "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2.zip": "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
}
SOURCE = "github.com/brendenlake/omniglot (python/ folder)"
# Bump when decoding or downscaling changes, so that old cache files are not read back.
PREPROCESS_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[2]

_PNG_NAME = re.compile(r"^(\d+)_(\d+)\.png$")  # <image id>_<drawer>.png


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
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(f"Omniglot archive {path} is corrupt or not the published file: sha256 "
                             f"expected {expected}, got {actual}; download it again from {SOURCE}")
        paths[name] = path
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


def _read_archive(path: Path) -> dict[tuple[str, str], dict[str, bytes]]:
    """``{(alphabet, character folder): {png name: bytes}}`` of one archive."""
    folders: dict[tuple[str, str], dict[str, bytes]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                parts = info.filename.strip("/").split("/")
                if info.is_dir() or not parts[-1].endswith(".png"):
                    continue
                if len(parts) != 4 or not _PNG_NAME.match(parts[3]):
                    raise ValueError(f"unexpected entry {info.filename!r} in {path}: expected "
                                     f"<top>/<Alphabet>/characterNN/<id>_<drawer>.png")
                folders.setdefault((parts[1], parts[2]), {})[parts[3]] = zf.read(info)
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
# the stream
# --------------------------------------------------------------------------------------------


# Fixed by the checksummed archives, so settings can be checked before any file is read.
N_ALPHABETS, N_DRAWERS, SMALLEST_ALPHABET = 8, 20, 17  # Tagalog has 17 characters


def check_omniglot_settings(n_experiences: int = 4, train_drawers: int = 15, heldout_per_alphabet: int = 2,
                            image_size: int = 28) -> None:
    """Raise ConfigError (a ValueError) naming ``benchmark.<key>`` for an impossible value."""
    from continual.config import ConfigError  # lazy: continual.config imports the registries

    if not 1 <= n_experiences <= N_ALPHABETS:
        raise ConfigError(f"config key benchmark.n_experiences must be in 1..{N_ALPHABETS} (at least one "
                          f"alphabet per experience), got {n_experiences}")
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
                          cache_dir: str | os.PathLike | None = None) -> Stream:
    """A class-incremental stream of characters, whole alphabets per experience.

    - The 8 alphabets are shuffled by ``seed`` and dealt into ``n_experiences`` groups as evenly as
      possible (8 over 3 gives 3, 3, 2); an experience brings every trained character of its alphabets.
    - Held out (never trained): the last ``heldout_per_alphabet`` character folders of every
      alphabet, the same for every seed so that few-shot numbers compare across seeds. They are new
      characters of alphabets that are trained, so their one attribute value (the alphabet) is
      known, as for the world's held-out categories; wholly new alphabets are what Lake et al.'s
      one-shot runs test (``continual.metrics.few_shot.lake_one_shot``).
    - Per character, ``train_drawers`` of its drawers (drawn by ``seed``) are training images and the
      rest are test images. A held-out character puts all its drawings in the test set: none is
      ever trained on, and few-shot episodes need K support plus some query images per class.
    - Labels in arrival order (experience 0's characters are 0..k-1, ...), held-out ones last.
    """
    check_omniglot_settings(n_experiences, train_drawers, heldout_per_alphabet, image_size)
    data = load_omniglot(data_root, cache_dir, image_size)
    n_alphabets = len(data.alphabet_names)
    char_alphabet = _character_alphabet(data)  # (n_characters,)
    drawings = torch.bincount(data.character)

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_alphabets, generator=gen).tolist()
    groups = [g.tolist() for g in torch.tensor(order).tensor_split(n_experiences)]

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
    label_of = torch.full((len(data.character_names),), -1, dtype=torch.long)
    label_of[torch.tensor(arrival)] = torch.arange(len(arrival))
    n_stream = len(arrival) - len(heldout_chars)

    # Drawer split per character: random keys ranked within each character.
    keys = data.character.double() + torch.rand(len(data.character), generator=gen, dtype=torch.double)
    by_char = keys.argsort()
    starts = torch.cumsum(drawings, 0) - drawings
    rank = torch.empty_like(by_char)
    rank[by_char] = torch.arange(len(by_char)) - starts[data.character[by_char]]
    labels = label_of[data.character]
    is_train = (rank < train_drawers) & (labels < n_stream)

    # Sorted by label, then drawer: stable, readable order (the loop shuffles anyway).
    def take(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = mask.nonzero().squeeze(1)
        idx = idx[(labels[idx] * 1000 + data.drawer[idx]).argsort()]
        return data.images[idx], labels[idx]

    train_x, train_y = take(is_train)
    test_x, test_y = take(~is_train)
    names = [data.character_names[c] for c in arrival]
    codes = char_alphabet[torch.tensor(arrival)][:, None]  # (C, 1) alphabet index per label
    bounds = torch.tensor([0] + [len(c) for c in stream_chars]).cumsum(0).tolist()
    return Stream(
        name="omniglot",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        experiences=[list(range(bounds[e], bounds[e + 1])) for e in range(n_experiences)],
        heldout=list(range(n_stream, len(arrival))),
        class_names=names,
        train_counts=torch.bincount(train_y, minlength=n_stream).tolist(),
        attribute_space=AttributeSpace(names=("alphabet",), values=(tuple(data.alphabet_names),)),
        class_codes=codes,
        fine_grained_pairs=[],
    )


def _character_alphabet(data: OmniglotData) -> torch.Tensor:
    """``(n_characters,)`` alphabet index of every character."""
    out = torch.empty(len(data.character_names), dtype=torch.long)
    out[data.character] = data.alphabet
    return out


OMNIGLOT_KEYS = ("data_root", "n_experiences", "train_drawers", "heldout_per_alphabet", "image_size",
                 "seed", "cache_dir")


def omniglot_stream_from_dict(cfg: dict) -> Stream:
    """Build the stream from a plain ``benchmark`` config dict, naming any unknown key."""
    cfg = dict(cfg)
    cfg.pop("name", None)
    for key in cfg:
        if key not in OMNIGLOT_KEYS:
            raise ValueError(f"unknown config key benchmark.{key}; known: {sorted(OMNIGLOT_KEYS)}")
    if "data_root" not in cfg:
        raise ValueError("config key benchmark.data_root is missing (the folder with the Omniglot archives)")
    return build_omniglot_stream(**cfg)


__all__ = ["EXPECTED_SHA256", "OmniglotData", "build_omniglot_stream", "check_omniglot_settings", "load_omniglot",
           "omniglot_stream_from_dict", "preprocess_pngs", "resolve_data_root", "sha256_file",
           "verify_archives"]

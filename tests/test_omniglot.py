"""The Omniglot stream: verified archives, clear errors, and a split by alphabet and by drawer."""

from __future__ import annotations

import shutil
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from continual.experiment import run_experiment
from continual.stream import build_stream
from continual.stream import omniglot as om
from tests.conftest import compose_config

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"
pytestmark = pytest.mark.skipif(not all((DATA / n).is_file() for n in om.EXPECTED_SHA256),
                                reason=f"Omniglot archives not found in {DATA}")
SMALL1, SMALL2 = sorted(om.EXPECTED_SHA256)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="module")
def data(cache) -> om.OmniglotData:
    return om.load_omniglot(DATA, cache, image_size=28)


def _copy(tmp_path: Path) -> Path:
    for name in om.EXPECTED_SHA256:
        shutil.copyfile(DATA / name, tmp_path / name)
    return tmp_path


def test_archives_match_their_published_checksums():
    paths = om.verify_archives(DATA)
    assert set(paths) == set(om.EXPECTED_SHA256)
    for name, path in paths.items():
        assert om.sha256_file(path) == om.EXPECTED_SHA256[name]


def test_missing_folder_or_archive_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="brendenlake/omniglot") as err:
        om.load_omniglot(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    shutil.copyfile(DATA / SMALL1, tmp_path / SMALL1)
    with pytest.raises(FileNotFoundError, match=SMALL2.replace(".", r"\.")) as err:
        om.load_omniglot(tmp_path)
    assert "brendenlake/omniglot" in str(err.value)


@pytest.mark.parametrize("damage", ["flip_byte", "truncate"])
def test_corrupt_or_truncated_archive_names_file_and_digests(tmp_path, damage):
    root = _copy(tmp_path)
    target = root / SMALL2
    raw = bytearray(target.read_bytes())
    if damage == "flip_byte":
        raw[len(raw) // 2] ^= 0xFF
    else:
        raw = raw[: len(raw) // 2]
    target.chmod(0o644)
    target.write_bytes(bytes(raw))
    with pytest.raises(ValueError) as err:
        om.load_omniglot(root, cache_dir=tmp_path / "c")
    message = str(err.value)
    assert SMALL2 in message and om.EXPECTED_SHA256[SMALL2] in message
    assert om.sha256_file(target) in message
    assert not (tmp_path / "c").exists()  # nothing cached from a bad archive


def test_images_are_uint8_ink_bright_and_merged_without_duplicates(data):
    assert data.images.dtype == torch.uint8 and data.images.shape == (4840, 1, 28, 28)
    # Ink is the minority of pixels and bright; the background is black.
    mean, faintest_peak = float(data.images.float().mean()), int(data.images.amax((1, 2, 3)).min())
    assert mean < 40 and faintest_peak >= 128  # thin strokes lose some peak brightness to antialiasing
    assert torch.bincount(data.images.flatten()).argmax() == 0
    assert len(data.alphabet_names) == 8 and len(data.character_names) == 242
    assert len(set(data.character_names)) == 242
    # Greek (24 characters) and Latin (26) are in both archives but count once, 20 drawers each.
    greek = data.alphabet_names.index("Greek")
    assert len(torch.unique(data.character[data.alphabet == greek])) == 24
    assert torch.bincount(data.character).eq(20).all()
    for c in range(242):
        assert sorted(data.drawer[data.character == c].tolist()) == list(range(20))


def test_second_load_reads_the_cache(data, cache, monkeypatch):
    monkeypatch.setattr(om, "preprocess_pngs", lambda *a, **k: pytest.fail("decoded again"))
    again = om.load_omniglot(DATA, cache, image_size=28)
    assert torch.equal(again.images, data.images) and again.character_names == data.character_names


def _rows(x: torch.Tensor) -> list[bytes]:
    return [bytes(r) for r in x.flatten(1).numpy()]


@pytest.mark.parametrize("n_experiences,heldout,seed", [(4, 2, 0), (3, 3, 1)])
def test_stream_split(data, cache, n_experiences, heldout, seed):
    s = om.build_omniglot_stream(DATA, n_experiences=n_experiences, train_drawers=15,
                                 heldout_per_alphabet=heldout, seed=seed, cache_dir=cache)
    C, n_stream = s.n_classes, 242 - 8 * heldout
    assert C == 242 and s.n_experiences == n_experiences and s.image_shape == (1, 28, 28)
    # Labels in arrival order, held-out last.
    assert [c for e in s.experiences for c in e] == list(range(n_stream))
    assert s.heldout == list(range(n_stream, C))
    # Experiences bring whole new alphabets: disjoint, covering all 8, with all their trained characters.
    alphabet = s.class_codes[:, 0]
    per_exp = [set(alphabet[e].tolist()) for e in s.experiences]
    assert sum(len(a) for a in per_exp) == 8 and set().union(*per_exp) == set(range(8))
    for e, alphabets in zip(s.experiences, per_exp):
        members = [c for c in range(n_stream) if int(alphabet[c]) in alphabets]
        assert members == e
    # Held-out: the last K character folders of every alphabet, never trained.
    assert not torch.isin(s.train_y, torch.tensor(s.heldout)).any()
    for a, name in enumerate(data.alphabet_names):
        folders = sorted(n for n in data.character_names if n.startswith(name + "/"))
        assert sorted(s.class_names[h] for h in s.heldout if int(alphabet[h]) == a) == folders[-heldout:]
    # Names and codes agree.
    assert all(s.class_names[c].split("/")[0] == data.alphabet_names[int(alphabet[c])] for c in range(C))
    assert s.attribute_space.names == ("alphabet", "strokes") and s.class_codes.shape == (C, 2)
    # Drawer split per character: train and test partition the character's 20 drawings.
    drawer_of = {(data.character_names[int(c)], b): int(d)
                 for c, b, d in zip(data.character, _rows(data.images), data.drawer)}
    train_rows, test_rows = _rows(s.train_x), _rows(s.test_x)
    test_drawers = {}
    for c in range(C):
        tr = {drawer_of[(s.class_names[c], b)] for b, y in zip(train_rows, s.train_y.tolist()) if y == c}
        te = {drawer_of[(s.class_names[c], b)] for b, y in zip(test_rows, s.test_y.tolist()) if y == c}
        assert not tr & te
        assert len(tr) == (15 if c < n_stream else 0) and tr | te == set(range(20))
        test_drawers[c] = frozenset(te)
    assert len(set(test_drawers[c] for c in range(n_stream))) > 1  # drawn per character, not one global split
    assert s.train_counts == [15] * n_stream
    assert s.train_x.dtype == s.test_x.dtype == torch.uint8


def test_seed_changes_alphabet_order_not_heldout(cache):
    a = om.build_omniglot_stream(DATA, seed=0, cache_dir=cache)
    b = om.build_omniglot_stream(DATA, seed=5, cache_dir=cache)
    assert [a.class_names[h] for h in a.heldout] != [] and \
        sorted(a.class_names[h] for h in a.heldout) == sorted(b.class_names[h] for h in b.heldout)
    assert a.class_names[: len(a.experiences[0])] != b.class_names[: len(b.experiences[0])]


def test_bad_values_and_unknown_keys_name_the_key(cache):
    base = {"name": "omniglot", "data_root": str(DATA), "cache_dir": str(cache)}
    with pytest.raises(ValueError, match=r"benchmark\.bogus"):
        build_stream({**base, "bogus": 1})
    for key, value in [("n_experiences", 9), ("train_drawers", 20), ("heldout_per_alphabet", 17)]:
        with pytest.raises(ValueError, match=rf"benchmark\.{key}"):
            build_stream({**base, key: value})


def test_impossible_setting_fails_before_the_run_folder_or_any_file(tmp_path):
    cfg = compose_config(["benchmark=omniglot", "benchmark.heldout_per_alphabet=17", "logger.wandb.mode=disabled"])
    cfg["benchmark"]["data_root"] = str(tmp_path / "no-data")  # would fail differently if it were read
    with pytest.raises(ValueError, match=r"benchmark\.heldout_per_alphabet"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    cfg = compose_config(["benchmark=omniglot", "+benchmark.alphabets=3"])
    with pytest.raises(ValueError, match=r"unknown config key benchmark\.alphabets"):
        run_experiment(cfg, tmp_path / "run")


def test_relative_data_root_resolves_against_the_repo(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert om.resolve_data_root("../shared/data/omniglot").resolve() == DATA.resolve()


def test_config_composes_and_a_tiny_run_trains_on_one_channel_images(tmp_path, cache):
    cfg = compose_config(["benchmark=omniglot", "benchmark.n_experiences=2", "benchmark.train_drawers=2",
                          "benchmark.image_size=14", "train.epochs=1", "learner.backbone_args.width=8",
                          "learner.backbone_args.embed_dim=32", "memory.size=64", "progress=false",
                          "logger.wandb.mode=disabled", "device=cpu"])
    cfg["benchmark"]["cache_dir"] = str(cache)
    card = run_experiment(cfg, tmp_path / "run", print_fn=lambda _: None)
    assert len(card.accuracy_matrix) == 2
    assert card.attribute_accuracy is not None and "alphabet" in card.attribute_accuracy
    assert 0.0 <= card.average_accuracy <= 1.0


# --------------------------------------------------------------------------------------------
# whole alphabets held out, in folds
# --------------------------------------------------------------------------------------------

ALPHABET_SIZES = {"Balinese": 24, "Early_Aramaic": 22, "Greek": 24, "Japanese_(katakana)": 47, "Korean": 40,
                  "Latin": 26, "Sanskrit": 42, "Tagalog": 17}


def test_alphabet_sizes(data):
    sizes = {n: len(torch.unique(data.character[data.alphabet == a])) for a, n in enumerate(data.alphabet_names)}
    assert sizes == ALPHABET_SIZES


def test_nothing_held_out_is_the_stream_as_before(cache):
    a = om.build_omniglot_stream(DATA, n_experiences=3, seed=1, cache_dir=cache)
    b = om.build_omniglot_stream(DATA, n_experiences=3, seed=1, cache_dir=cache, heldout_alphabets=0,
                                 alphabet_fold=0)
    for key in ("train_x", "train_y", "test_x", "test_y", "class_codes", "train_codes"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert a.class_names == b.class_names and a.experiences == b.experiences and a.heldout == b.heldout
    assert a.novel is None and b.novel is None


def test_folds_partition_the_alphabets_and_keep_them_out_of_the_stream(data, cache):
    names = sorted(ALPHABET_SIZES)
    held = []
    for fold in range(4):
        s = om.build_omniglot_stream(DATA, n_experiences=3, seed=fold, cache_dir=cache, heldout_alphabets=2,
                                     alphabet_fold=fold)
        novel = s.novel
        assert novel.group_names == names[2 * fold: 2 * fold + 2]
        held += novel.group_names
        # The stream: the other six alphabets only, none of the held-out ones, not even as attribute values.
        stream_alphabets = {n.split("/")[0] for n in s.class_names}
        assert stream_alphabets == set(names) - set(novel.group_names)
        assert set(s.attribute_space.values[0]) == stream_alphabets
        assert sorted({s.class_names[c].split("/")[0] for e in s.experiences for c in e}) == sorted(stream_alphabets)
        assert s.n_classes == sum(ALPHABET_SIZES[n] for n in stream_alphabets)
        stream_rows = set(_rows(s.train_x)) | set(_rows(s.test_x))
        assert not stream_rows & set(_rows(novel.images))
        # Novel: all 20 drawers of every character, sorted by (character, drawer), named by alphabet.
        n = sum(ALPHABET_SIZES[g] for g in novel.group_names)
        assert novel.n_categories == n and novel.images.shape == (20 * n, 1, 28, 28)
        assert torch.equal(novel.category, torch.arange(n).repeat_interleave(20))
        assert torch.equal(novel.drawer, torch.arange(20).repeat(n))
        assert [novel.group_names[int(g)] for g in novel.group[::20]] == [c.split("/")[0] for c in novel.category_names]
        first = data.character_names.index(novel.category_names[0])
        assert torch.equal(novel.images[:20], data.images[data.character == first])
        assert novel.images.dtype == torch.uint8 and novel.strokes.shape == (20 * n,)
    assert sorted(held) == names and len(held) == 8  # every alphabet held out in exactly one fold


def test_bad_fold_or_experiences_name_the_key(cache):
    base = {"name": "omniglot", "data_root": str(DATA), "cache_dir": str(cache)}
    for extra, key in [({"heldout_alphabets": 2, "alphabet_fold": 4}, "alphabet_fold"),
                       ({"alphabet_fold": 1}, "alphabet_fold"),
                       ({"heldout_alphabets": 8}, "heldout_alphabets"),
                       ({"heldout_alphabets": 3, "alphabet_fold": 0, "n_experiences": 6}, "n_experiences")]:
        with pytest.raises(ValueError, match=rf"benchmark\.{key}"):
            build_stream({**base, **extra})
    # Three per fold: folds of 3, 3 and 2 alphabets; the short last fold leaves six in the stream.
    s = build_stream({**base, "heldout_alphabets": 3, "alphabet_fold": 2, "n_experiences": 6, "strokes": False})
    assert s.novel.group_names == ["Sanskrit", "Tagalog"] and s.n_experiences == 6


def test_bad_fold_fails_before_the_run_folder(tmp_path):
    cfg = compose_config(["benchmark=omniglot", "benchmark.heldout_alphabets=2", "benchmark.alphabet_fold=4",
                          "logger.wandb.mode=disabled"])
    cfg["benchmark"]["data_root"] = str(tmp_path / "no-data")
    with pytest.raises(ValueError, match=r"benchmark\.alphabet_fold"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# pen strokes
# --------------------------------------------------------------------------------------------


def _stroke_text(n_strokes: int) -> str:
    points = "1.5,-2.25,0\n2.5,-3.0,16\n"
    return "START\n" + "".join(points + "BREAK\n" for _ in range(n_strokes))


def test_stroke_counts_are_the_break_lines_and_macos_metadata_is_skipped(tmp_path):
    path = tmp_path / "strokes.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("top/", "")
        zf.writestr("top/.DS_Store", b"\0junk")
        zf.writestr("__MACOSX/top/Alpha/character01/._0001_01.txt", b"\0\x05junk")
        zf.writestr("top/Alpha/character01/0001_01.txt", _stroke_text(3))
        zf.writestr("top/Alpha/character01/0001_02.txt", _stroke_text(1).replace("\n", "\r\n"))
        zf.writestr("top/Beta/character02/0002_01.txt", _stroke_text(7))
    counts = om.read_stroke_counts({"strokes.zip": path})
    assert counts == {("Alpha", "character01", "0001_01"): 3, ("Alpha", "character01", "0001_02"): 1,
                      ("Beta", "character02", "0002_01"): 7}
    assert om.stroke_bucket(torch.tensor([1, 2, 3, 4, 5, 7, 29])).tolist() == [0, 1, 2, 3, 4, 4, 4]
    with pytest.raises(ValueError, match="START"):
        om.count_strokes(b"1,2,0\nBREAK\n", "x.txt")
    with pytest.raises(ValueError, match="no stroke"):
        om.count_strokes(b"START\n1,2,0\n", "x.txt")


def test_real_stroke_counts_match_their_files_and_are_cached(data, cache, monkeypatch):
    counts = om.load_stroke_counts(DATA, data, cache)
    assert counts.shape == (4840,) and int(counts.min()) >= 1
    # Spot checks against the files themselves: <id>_<drawer>.txt is the drawer's drawing.
    checked = 0
    for archive in om.EXPECTED_STROKES_SHA256:
        with zipfile.ZipFile(DATA / archive) as zf:
            files = [n for n in zf.namelist() if n.endswith(".txt") and not n.startswith("__MACOSX")]
            for name in files[::150]:
                _, alphabet, char, stem = name.split("/")
                i = ((data.character == data.character_names.index(f"{alphabet}/{char}"))
                     & (data.drawer == int(stem[5:7]) - 1)).nonzero().item()
                assert int(counts[i]) == zf.read(name).decode().splitlines().count("BREAK"), name
                checked += 1
    assert checked > 30 and len(torch.unique(counts)) > 10
    monkeypatch.setattr(om, "read_stroke_counts", lambda *a, **k: pytest.fail("stroke zips read again"))
    assert torch.equal(om.load_stroke_counts(DATA, data, cache), counts)


def test_stroke_attribute_per_image_and_per_character(data, cache):
    s = om.build_omniglot_stream(DATA, seed=2, cache_dir=cache)
    assert s.attribute_space.names == ("alphabet", "strokes")
    assert s.attribute_space.values[1] == om.STROKE_BUCKETS
    codes = s.train_codes
    assert codes.shape == (len(s.train_y), 2) and codes.dtype == torch.long
    assert torch.equal(codes[:, 0], s.class_codes[s.train_y, 0])
    differs = codes[:, 1] != s.class_codes[s.train_y, 1]
    assert 0 < int(differs.sum()) < len(differs) // 2  # drawers do vary, but the mode is the common case
    # A character's value is the most common bucket over its training drawings, ties to the smaller.
    for c in range(len(s.experiences[0]) + 5):
        votes = Counter(codes[s.train_y == c, 1].tolist())
        top = max(votes.values())
        assert int(s.class_codes[c, 1]) == min(b for b, v in votes.items() if v == top)
    # A held-out character's value: over all its 20 drawings.
    buckets = om.stroke_bucket(om.load_stroke_counts(DATA, data, cache))
    for h in s.heldout[:5]:
        votes = Counter(buckets[data.character == data.character_names.index(s.class_names[h])].tolist())
        top = max(votes.values())
        assert int(s.class_codes[h, 1]) == min(b for b, v in votes.items() if v == top)
    idx = torch.tensor([0, 5, 17])
    assert torch.equal(s.codes_for(idx), codes[idx])
    plain = om.build_omniglot_stream(DATA, seed=2, cache_dir=cache, strokes=False)
    assert torch.equal(plain.codes_for(idx), plain.class_codes[plain.train_y[idx]])


def test_strokes_off_is_the_stream_without_the_attribute(cache):
    on = om.build_omniglot_stream(DATA, seed=3, cache_dir=cache, heldout_alphabets=1, alphabet_fold=7)
    off = om.build_omniglot_stream(DATA, seed=3, cache_dir=cache, heldout_alphabets=1, alphabet_fold=7,
                                   strokes=False)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(on, key), getattr(off, key)), key
    assert off.attribute_space.names == ("alphabet",) and off.train_codes is None
    assert torch.equal(off.class_codes, on.class_codes[:, :1])
    assert off.novel.strokes is None and torch.equal(off.novel.images, on.novel.images)
    assert on.novel.group_names == ["Tagalog"]


def test_to_moves_codes_and_novel_images(cache):
    s = om.build_omniglot_stream(DATA, cache_dir=cache, heldout_alphabets=4, alphabet_fold=1).to("meta")
    assert s.train_codes.device.type == s.class_codes.device.type == "meta"
    for name in ("images", "category", "group", "drawer", "strokes"):
        assert getattr(s.novel, name).device.type == "meta", name


def _images_only(tmp_path: Path) -> Path:
    for name in om.EXPECTED_SHA256:
        (tmp_path / name).symlink_to(DATA / name)
    return tmp_path


def test_missing_stroke_archive_warns_and_turns_strokes_off(tmp_path, cache):
    root = _images_only(tmp_path)
    (root / "strokes_background_small1.zip").symlink_to(DATA / "strokes_background_small1.zip")
    with pytest.warns(UserWarning, match=r"strokes_background_small2\.zip is missing: strokes are off"):
        s = om.build_omniglot_stream(root, seed=4, cache_dir=cache)
    assert s.attribute_space.names == ("alphabet",) and s.class_codes.shape == (s.n_classes, 1)
    assert s.train_codes is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # strokes=False asks for none: no warning
        off = om.build_omniglot_stream(root, seed=4, cache_dir=cache, strokes=False)
    assert torch.equal(off.train_x, s.train_x) and torch.equal(off.class_codes, s.class_codes)


def test_corrupt_stroke_archive_names_file_and_digests(tmp_path, cache):
    root = _images_only(tmp_path)
    (root / "strokes_background_small1.zip").symlink_to(DATA / "strokes_background_small1.zip")
    target = root / "strokes_background_small2.zip"
    raw = bytearray((DATA / target.name).read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(ValueError) as err:
        om.build_omniglot_stream(root, cache_dir=cache)
    message = str(err.value)
    assert target.name in message and om.EXPECTED_STROKES_SHA256[target.name] in message
    assert om.sha256_file(target) in message


def test_a_run_with_alphabets_held_out_reports_lake_trials_and_meeting_one_at_a_time(tmp_path, cache):
    import json

    from continual.metrics.report import format_report

    cfg = compose_config(["benchmark=omniglot", "benchmark.heldout_alphabets=2", "benchmark.alphabet_fold=1",
                          "benchmark.n_experiences=1", "benchmark.image_size=14", "train.epochs=1",
                          "learner.backbone_args.width=8", "learner.backbone_args.embed_dim=32", "memory.size=64",
                          "eval.new_domain.one_shot_trials=30", "eval.new_domain.max_categories=12",
                          "eval.new_domain.after=[10]", "eval.few_shot.episodes=20", "progress=false",
                          "logger.wandb.mode=disabled", "device=cpu"])
    cfg["benchmark"]["cache_dir"] = str(cache)
    card = run_experiment(cfg, tmp_path / "run", print_fn=lambda _: None)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    lake = report["one_shot_new_alphabets"]
    assert {"error", "ci95", "trials", "alphabets"} <= set(lake) and lake["trials"] == 30
    assert lake["alphabets"] == ["Greek", "Japanese_(katakana)"] and 0.0 <= lake["error"] <= 1.0
    meet = report["one_at_a_time"]
    assert meet["n_all"] == 12 and set(meet) == {"10", "all", "n_all", "curve"} and 0.0 <= meet["all"] <= 1.0
    text = format_report(card)
    assert "one-shot, new alphabets" in text and "met one at a time" in text

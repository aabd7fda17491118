"""The Omniglot stream: verified archives, clear errors, and a split by alphabet and by drawer."""

from __future__ import annotations

import shutil
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
    assert s.attribute_space.names == ("alphabet",) and s.class_codes.shape == (C, 1)
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

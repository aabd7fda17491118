"""Few-shot evaluation: prototype episodes on synthetic embeddings, Lake et al.'s protocol on a fake folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from continual.experiment import build_learner
from continual.metrics import few_shot
from continual.metrics.few_shot import few_shot_report, lake_one_shot, lake_style_trials, prototype_episodes
from continual.stream import build_stream
from tests.conftest import ROOT, TINY, compose_config


def _clusters(n_classes: int, per_class: int, dim: int, spread: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=gen) * 10
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=gen), labels


def test_well_separated_clusters_are_classified_perfectly():
    z, y = _clusters(12, 10, 16, spread=0.1)
    r = prototype_episodes(z, y, list(range(12)), n_way=5, k_shot=1, n_query=5, n_episodes=200, seed=0)
    assert r["accuracy"] > 0.99
    assert (r["n_way"], r["k_shot"], r["episodes"]) == (5, 1, 200)


def test_pure_noise_is_at_chance_within_the_interval():
    z, _ = _clusters(1, 400, 16, spread=1.0)
    y = torch.arange(20).repeat_interleave(20)  # labels carry no information about z
    r = prototype_episodes(z, y, list(range(20)), n_way=5, k_shot=1, n_query=5, n_episodes=2000, seed=1)
    assert abs(r["accuracy"] - 1 / 5) <= 2 * r["ci95"]
    assert 0 < r["ci95"] < 0.02


def test_interval_shrinks_with_more_episodes_and_seed_is_deterministic():
    z, _ = _clusters(1, 400, 16, spread=1.0)
    y = torch.arange(20).repeat_interleave(20)
    few = prototype_episodes(z, y, list(range(20)), 5, 1, 5, 100, seed=0)
    many = prototype_episodes(z, y, list(range(20)), 5, 1, 5, 1600, seed=0)
    assert many["ci95"] < few["ci95"] / 2.5  # ~1/sqrt(16) = 1/4
    assert prototype_episodes(z, y, list(range(20)), 5, 1, 5, 100, seed=0) == few


def test_episodes_only_use_the_given_classes_and_check_counts():
    z, y = _clusters(6, 8, 8, spread=0.1)
    # 8 images per class: 2 shots + 6 queries use them all, 3 + 6 is one too many.
    r = prototype_episodes(z, y, [0, 1, 2], n_way=3, k_shot=2, n_query=6, n_episodes=50, seed=0)
    assert r["accuracy"] > 0.99
    with pytest.raises(ValueError, match="fewer than k_shot"):
        prototype_episodes(z, y, [0, 1, 2], n_way=3, k_shot=3, n_query=6, n_episodes=5, seed=0)
    with pytest.raises(ValueError, match="n_way"):
        prototype_episodes(z, y, [0, 1], n_way=3, k_shot=1, n_query=1, n_episodes=5, seed=0)


def test_report_keys_clip_way_and_query_and_skip_impossible_shots():
    z, y = _clusters(8, 6, 8, spread=0.1)
    r = few_shot_report(z, y, list(range(8)), shots=(1, 5), n_way=5, n_query=15, n_episodes=20)
    assert set(r) == {"5way_1shot", "5way_5shot"}
    assert r["5way_1shot"]["n_query"] == 5 and r["5way_5shot"]["n_query"] == 1
    r = few_shot_report(z, y, [0, 1, 2], shots=(1, 5, 6), n_way=5, n_episodes=20)
    assert set(r) == {"3way_1shot", "3way_5shot"}  # 6 shots would leave no query
    assert few_shot_report(z, y, [0], n_episodes=5) == {}


# --------------------------------------------------------------------------------------------
# Lake et al.'s one-shot protocol on a fake folder
# --------------------------------------------------------------------------------------------


def _glyph(k: int) -> np.ndarray:
    """A 105x105 drawing of 'class' k: black ink (False) on white (True), like Omniglot's PNGs."""
    img = np.ones((105, 105), dtype=bool)
    img[10 + 30 * k: 30 + 30 * k, 10:95] = False  # a horizontal bar at height k
    return img


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).convert("1").save(path)


def _fake_runs(root: Path) -> None:
    """run01: every test item is its class's drawing (error 0). run02: item01, paired with class01,
    is drawn as class02 (error 1/3). Lines are listed out of class order, as in the real files."""
    layout = {"run01": {1: 3, 2: 1, 3: 2}, "run02": {1: 2, 2: 3, 3: 1}}  # test item -> paired class
    for run, pairs in layout.items():
        lines = []
        for item, cls in pairs.items():
            _write_png(root / run / "training" / f"class{cls:02d}.png", _glyph(cls - 1))
            drawn = cls - 1
            if run == "run02" and item == 1:
                drawn = (cls % 3)  # another class's bar
            _write_png(root / run / "test" / f"item{item:02d}.png", _glyph(drawn))
            lines.append(f"{run}/test/item{item:02d}.png {run}/training/class{cls:02d}.png")
        (root / run / "class_labels.txt").write_text("\n".join(lines) + "\n")


def test_lake_protocol_on_a_fake_folder_gives_the_known_error(tmp_path):
    _fake_runs(tmp_path)
    seen = []

    def flatten(x: torch.Tensor) -> torch.Tensor:
        seen.append((x.dtype, tuple(x.shape[1:]), int(x.max()), float(x.float().mean())))
        return x.flatten(1).float()

    r = lake_one_shot(flatten, tmp_path, image_size=28)
    assert r["runs"] == ["run01", "run02"]
    assert r["per_run_error"] == pytest.approx([0.0, 1 / 3])
    assert r["error"] == pytest.approx(1 / 6)
    dtype, shape, top, mean = seen[0]
    assert dtype == torch.uint8 and shape == (1, 28, 28)
    assert top == 255 and mean < 100  # ink is bright on a dark background, as in load_omniglot


def test_lake_protocol_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="brendenlake/omniglot"):
        lake_one_shot(lambda x: x.flatten(1).float(), tmp_path / "nope", 28)


def _one_shot_module():
    spec = importlib.util.spec_from_file_location("one_shot", ROOT / "experiments" / "one_shot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_load_learner_from_run_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        _one_shot_module().load_learner_from_run(tmp_path)


def test_load_learner_from_run_restores_the_weights_and_evaluates(tmp_path, world_cache):
    one_shot = _one_shot_module()
    cfg = compose_config([*TINY, "device=cpu"], world_cache)
    stream = build_stream(cfg["benchmark"])
    torch.manual_seed(123)  # weights unlike the ones a fresh build_learner gives
    learner = build_learner(cfg, stream, torch.device("cpu"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(cfg))
    torch.save({"learner": learner.checkpoint_state(), "config": cfg}, run_dir / "checkpoint.pt")

    loaded, loaded_stream, loaded_cfg = one_shot.load_learner_from_run(run_dir)
    assert loaded_cfg == cfg and loaded_stream.n_classes == stream.n_classes
    for key, value in learner.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(loaded.state_dict()[key], value), key

    _fake_runs(tmp_path / "runs")
    result = one_shot.main([str(run_dir), str(tmp_path / "runs")])  # colour learner: grey in every channel
    assert len(result["per_run_error"]) == 2 and 0.0 <= result["error"] <= 1.0


# --------------------------------------------------------------------------------------------
# Lake-style trials built from labelled drawings
# --------------------------------------------------------------------------------------------


def _drawings(sizes: list[int], n_drawers: int = 20):
    """Every drawer's drawing of every category; category ids run across groups of the given sizes."""
    group = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))  # (n_categories,)
    n_cat = len(group)
    category = torch.arange(n_cat).repeat_interleave(n_drawers)  # (M,)
    drawer = torch.arange(n_drawers).repeat(n_cat)  # (M,)
    return category, group[category], drawer


def test_distinct_characters_with_drawer_noise_make_no_error():
    category, group, drawer = _drawings([20, 26, 22])
    gen = torch.Generator().manual_seed(0)
    directions = torch.randn(int(category.max()) + 1, 64, generator=gen)  # (n_categories, 64)
    z = directions[category] + 0.05 * torch.randn(len(category), 64, generator=gen)
    r = lake_style_trials(z, category, group, drawer, group_names=["a", "b", "c"], n_trials=30, seed=0)
    assert r["error"] == 0.0 and r["ci95"] == 0.0
    assert (r["trials"], r["n_way"], r["alphabets"]) == (30, 20, ["a", "b", "c"])
    assert r["per_alphabet"] == {"a": 0.0, "b": 0.0, "c": 0.0}


def test_embeddings_of_the_drawer_alone_are_at_chance():
    category, group, drawer = _drawings([20, 25])
    z = torch.randn(20, 16, generator=torch.Generator().manual_seed(1))[drawer]  # the hand, not the character
    r = lake_style_trials(z, category, group, drawer, group_names=["a", "b"], n_trials=40, seed=0)
    assert r["error"] == pytest.approx(1 - 1 / 20)
    z = torch.randn(len(drawer), 16, generator=torch.Generator().manual_seed(2))  # pure noise
    r = lake_style_trials(z, category, group, drawer, group_names=["a", "b"], n_way=5, n_trials=2000, seed=0)
    assert abs(r["error"] - (1 - 1 / 5)) <= 2 * r["ci95"] and 0 < r["ci95"] < 0.03


def test_a_trial_stays_in_one_alphabet_with_one_drawer_for_examples_and_another_for_tests(monkeypatch):
    # Character j of every alphabet has the same direction: a trial mixing alphabets would confuse them.
    sizes = [20, 24, 19]
    category, group, drawer = _drawings(sizes)
    first = torch.tensor([0, 20, 44])
    gen = torch.Generator().manual_seed(0)
    directions = torch.randn(24, 64, generator=gen)
    z = directions[category - first[group]] + 0.05 * torch.randn(len(category), 64, generator=gen)
    assert lake_style_trials(z, category, group, drawer, group_names=["a", "b", "c"], n_trials=60)["error"] == 0.0

    # Spy on what is compared, with embeddings that spell out (group, category, drawer).
    seen = []

    def spy(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        seen.append((queries.clone(), prototypes.clone()))
        return torch.zeros(queries.shape[:-1], dtype=torch.long)

    monkeypatch.setattr(few_shot, "_cosine_nearest", spy)
    spelled = torch.stack([group, category, drawer], 1).double().float()  # (M, 3), exact small integers
    r = lake_style_trials(spelled, category, group, drawer, group_names=["a", "b", "c"], n_trials=300, seed=3)
    assert r["alphabets"] == ["a", "b"] and set(r["per_alphabet"]) == {"a", "b"}  # c has 19 < 20
    tests = torch.cat([q for q, _ in seen]).long()  # (T, 20, 3)
    examples = torch.cat([p for _, p in seen]).long()  # (T, 20, 3)
    assert tests.shape == examples.shape == (300, 20, 3)
    for t in range(300):
        ex, te = examples[t], tests[t]
        assert len(set(ex[:, 0].tolist() + te[:, 0].tolist())) == 1  # one alphabet
        assert len(set(ex[:, 2].tolist())) == 1 and len(set(te[:, 2].tolist())) == 1  # one drawer each
        assert ex[0, 2] != te[0, 2]  # ... and not the same one
        assert len(set(ex[:, 1].tolist())) == 20 and set(ex[:, 1].tolist()) == set(te[:, 1].tolist())
        assert torch.equal(group[ex[:, 1] * 20], ex[:, 0])  # the categories are the alphabet's own
    # Round-robin over the eligible alphabets; random subsets of the larger one, all drawers used.
    assert (examples[:, 0, 0] == 0).sum() == (examples[:, 0, 0] == 1).sum() == 150
    assert examples[::2, 0, 0].eq(0).all()
    subsets = {frozenset(ex[:, 1].tolist()) for ex in examples[examples[:, 0, 0] == 1]}
    assert len(subsets) > 100
    assert set(examples[:, 0, 2].tolist()) == set(tests[:, 0, 2].tolist()) == set(range(20))


def test_same_seed_same_trials_and_errors_are_checked():
    category, group, drawer = _drawings([20, 30])
    z = torch.randn(len(category), 8, generator=torch.Generator().manual_seed(0))
    a = lake_style_trials(z, category, group, drawer, group_names=["a", "b"], n_trials=50, seed=7)
    assert lake_style_trials(z, category, group, drawer, group_names=["a", "b"], n_trials=50, seed=7) == a
    assert lake_style_trials(z, category, group, drawer, group_names=["a", "b"], n_trials=50, seed=8) != a
    with pytest.raises(ValueError, match="no group has n_way=31"):
        lake_style_trials(z, category, group, drawer, group_names=["a", "b"], n_way=31)
    with pytest.raises(ValueError, match=r"\(M, D\)"):
        lake_style_trials(z, category[:-1], group, drawer, group_names=["a", "b"])
    with pytest.raises(ValueError, match="at most once"):
        lake_style_trials(z, category, group, torch.zeros_like(drawer), group_names=["a", "b"])

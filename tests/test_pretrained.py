"""Pretrained torchvision backbones: weights read from a file exactly, wrong files named, frozen and partly
trained stages that really do not move, the ImageNet input transform checked by number, and a short run.
Nothing is downloaded: the "pretrained" weights are a randomly initialised torchvision model saved here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from continual.config import ConfigError, validate_config
from continual.experiment import run_experiment
from continual.learner import BACKBONES, LEARNERS
from continual.learner import pretrained as pt
from continual.memory import ClassBalancedReservoir
from continual.memory.budget import capacity_for_budget, memory_bytes
from tests.conftest import TINY, compose_config

SIZE = 32  # input_size in these tests: resnet18 at 32 px trains a step in ~0.1 s on a CPU core


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny steps: two threads gain nothing, and on a loaded 2-core machine their spin-waits made a
    # 0.3 s step take 9 s. These tests check which weights move, not speed.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A randomly initialised torchvision resnet18's state_dict (classification layer included) in a file."""
    torch.manual_seed(123)
    model = torchvision.models.resnet18()
    for m in model.modules():  # statistics that differ from a fresh model's, so loading them is visible
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_weights_from_a_file_are_the_files(weights):
    path, state = weights
    net = BACKBONES.build("resnet18", in_channels=3, weights=str(path), input_size=SIZE)
    got = net.trunk.state_dict()
    assert set(got) == {k for k in state if not k.startswith("fc.")}  # classification layer removed
    assert all(torch.equal(got[k], state[k]) for k in got)
    assert isinstance(net.trunk.fc, torch.nn.Identity) and net.embed_dim == 512
    z = net.eval()(torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8))
    assert z.shape == (2, 512)


@pytest.mark.parametrize("spoil, message", [
    (lambda s: {k: v for k, v in s.items() if not k.startswith("layer3.1.")}, r"12 missing keys \(layer3\.1\.conv1"),
    (lambda s: {**s, "layer2.0.conv1.weight": torch.zeros(128, 64, 5, 5)},
     r"1 wrong shapes \(layer2\.0\.conv1\.weight: file \(128, 64, 5, 5\), model \(128, 64, 3, 3\)\)"),
    (lambda s: {**s, "extra.weight": torch.zeros(3)}, r"1 unexpected keys \(extra\.weight\)"),
    (lambda s: [1, 2, 3], r"holds list, expected a state_dict"),
])
def test_a_file_that_does_not_fit_is_named(spoil, message, weights, tmp_path):
    path = tmp_path / "bad.pth"
    torch.save(spoil(dict(weights[1])), path)
    with pytest.raises(ValueError, match=rf"backbone resnet18: weights file {path} .*{message}"):
        BACKBONES.build("resnet18", weights=str(path), input_size=SIZE)
    # The config check says the same before any run folder exists.
    cfg = compose_config(["learner.backbone=resnet18", "~learner.backbone_args",
                          f"+learner.backbone_args={{weights: '{path}', input_size: {SIZE}}}"])
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_resnet50_refuses_resnet18_weights_and_a_missing_file_is_named(weights, tmp_path):
    with pytest.raises(ValueError, match=r"does not fit a torchvision resnet50: \d+ missing keys.*wrong shapes"):
        BACKBONES.build("resnet50", weights=str(weights[0]), input_size=SIZE)
    with pytest.raises(FileNotFoundError, match=rf"weights file {tmp_path / 'none.pth'} .* does not exist"):
        BACKBONES.build("resnet18", weights=str(tmp_path / "none.pth"))


def test_imagenet_weights_come_from_the_hub_cache_or_fail_naming_the_path(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # torch.hub.get_dir() = $TORCH_HOME/hub
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError, match=rf"looked for at {expected}, which is not there .*downloaded"):
        BACKBONES.build("resnet18", weights="imagenet")
    expected.parent.mkdir(parents=True)
    expected.write_bytes(weights[0].read_bytes())
    net = BACKBONES.build("resnet18", weights="imagenet", input_size=SIZE)
    assert torch.equal(net.trunk.layer4[1].bn2.running_var, weights[1]["layer4.1.bn2.running_var"])
    assert net.input.input_size == SIZE
    assert BACKBONES.build("resnet18", weights="imagenet").input.input_size == 224  # what the weights were trained at


def _learner(train: str, weights_path, **args):
    torch.manual_seed(0)
    return LEARNERS.build("finetune", n_classes=4, image_shape=(3, 24, 24), backbone="resnet18",
                          backbone_args={"weights": str(weights_path), "train": train, "input_size": SIZE, **args},
                          optimizer="sgd", lr=0.1, weight_decay=0.01)  # momentum and decay: both skip frozen weights


def _train_steps(learner, steps: int = 2) -> None:
    learner.begin_experience(0, [0, 1, 2, 3])
    for _ in range(steps):
        x = torch.randint(0, 256, (8, 3, 24, 24), dtype=torch.uint8)
        learner.observe(x, torch.arange(8) % 4, None)


def _tensors(learner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in learner.state_dict().items() if isinstance(v, torch.Tensor)}


def _changed(learner, before: dict) -> set[str]:
    return {k for k, v in _tensors(learner).items() if not torch.equal(before[k], v)}


def test_frozen_backbone_moves_neither_weights_nor_batch_norm_statistics(weights):
    learner = _learner("frozen", weights[0])
    before = _tensors(learner)
    _train_steps(learner)
    changed = _changed(learner, before)
    assert changed and all(k.startswith("class_head.") for k in changed), changed
    assert not learner.backbone.trunk.bn1.training  # learner.train() leaves the frozen trunk in eval mode
    assert not any(p.requires_grad for p in learner.backbone.parameters())
    # The frozen backbone is the model, not extra memory: no part of the budget, and a budget fits.
    assert "backbone" not in memory_bytes(learner)
    capacity = capacity_for_budget("200KB", lambda c: LEARNERS.build(
        "er", n_classes=4, image_shape=(3, 24, 24), backbone="resnet18",
        backbone_args={"weights": str(weights[0]), "train": "frozen", "input_size": SIZE},
        memory=ClassBalancedReservoir(c, (3, 24, 24))), "er")
    assert capacity == 200_000 // (3 * 24 * 24 + 8 + 8)  # images, labels and their host mirror; nothing else


def test_partial_training_moves_only_the_last_stages(weights):
    learner = _learner("partial", weights[0], trainable_stages=1)
    before = _tensors(learner)
    _train_steps(learner)
    changed = _changed(learner, before)
    moved = {k.split(".")[2] for k in changed if k.startswith("backbone.trunk.")}
    assert moved == {"layer4"}, moved
    # layer4's batch norm trains (statistics move); the frozen stem's does not.
    assert "backbone.trunk.layer4.1.bn2.running_mean" in changed
    assert "backbone.trunk.bn1.running_mean" not in changed and "backbone.trunk.layer3.1.bn2.weight" not in changed
    two = _learner("partial", weights[0], trainable_stages=3)
    _train_steps(two)
    moved = {k.split(".")[2] for k in _changed(two, before) if k.startswith("backbone.trunk.")}
    assert moved == {"layer2", "layer3", "layer4"}


def test_full_training_moves_every_stage(weights):
    learner = _learner("full", weights[0])
    before = _tensors(learner)
    _train_steps(learner, steps=1)
    moved = {k.split(".")[2] for k in _changed(learner, before) if k.startswith("backbone.trunk.")}
    assert moved == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}


def test_input_transform_resizes_and_normalises_on_the_device():
    net = pt.ImageNetInput(in_channels=3, input_size=8)
    x = torch.zeros(2, 3, 5, 7, dtype=torch.uint8)
    x[:, 0], x[:, 1], x[:, 2] = 0, 128, 255
    out = net(x)
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
    mean, std = torch.tensor(pt.IMAGENET_MEAN), torch.tensor(pt.IMAGENET_STD)
    want = (torch.tensor([0.0, 128 / 255, 1.0]) - mean) / std  # a constant image stays constant when resized
    torch.testing.assert_close(out[0, :, 3, 4], want)
    torch.testing.assert_close(out, want.view(1, 3, 1, 1).expand(2, 3, 8, 8))
    # A downscale averages (antialiased bilinear), as torchvision's resize of a tensor does.
    img = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    ref = F.interpolate(img.float() / 255, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(net(img), (ref - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
    grey = pt.ImageNetInput(in_channels=1, input_size=8)(torch.full((1, 1, 8, 8), 51, dtype=torch.uint8))
    torch.testing.assert_close(grey[0, :, 0, 0], (0.2 - mean) / std)  # grey repeated to RGB


def test_vit_builds_at_a_small_size_and_interpolates_positions():
    net = BACKBONES.build("vit_b_16", in_channels=3, input_size=32, train="partial", trainable_stages=2)
    trainable = {n.split(".")[3] for n, p in net.named_parameters() if p.requires_grad and ".layers." in n}
    assert trainable == {"encoder_layer_10", "encoder_layer_11"} and net.embed_dim == 768
    assert net.trunk.encoder.ln.weight.requires_grad and not net.trunk.class_token.requires_grad
    z = net.eval()(torch.randint(0, 256, (1, 3, 20, 20), dtype=torch.uint8))
    assert z.shape == (1, 768) and torch.isfinite(z).all()
    # Weights trained at 224 px (14 x 14 patches + class token) fit a 32 px model (2 x 2 + 1).
    state = {"encoder.pos_embedding": torch.randn(1, 197, 768)}
    assert pt._fit_positions(state, "vit_b_16", 32)["encoder.pos_embedding"].shape == (1, 5, 768)


@pytest.mark.parametrize("args, message", [
    ({"width": 8}, r"unknown config key learner\.backbone_args\.width for backbone resnet18"),
    ({"train": "partial"}, r"trainable_stages must be in 1\.\.4 with train=partial"),
    ({"train": "full", "trainable_stages": 2}, r"trainable_stages=2 is for train=partial only"),
    ({"train": "half"}, r"learner\.backbone_args\.train must be one of frozen, partial, full"),
    ({"input_size": "big"}, r"learner\.backbone_args\.input_size must be int"),
])
def test_bad_arguments_fail_at_config_time(args, message):
    cfg = compose_config(["learner.backbone=resnet18", "~learner.backbone_args", "+learner.backbone_args={}"])
    cfg["learner"]["backbone_args"] = args
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_a_tiny_run_trains_with_a_partly_frozen_resnet18(weights, tmp_path, world_cache):
    overrides = [o for o in TINY if not o.startswith("learner.backbone_args")]
    cfg = compose_config([*overrides, "learner.backbone=resnet18", "~learner.backbone_args",
                          f"+learner.backbone_args={{weights: '{weights[0]}', train: partial, trainable_stages: 1, "
                          f"input_size: {SIZE}}}", "benchmark.train_per_category=8", "benchmark.n_experiences=2",
                          "eval.few_shot.episodes=5", "eval.learning_speed=false", "device=cpu"], world_cache)
    card = run_experiment(cfg, tmp_path / "run", print_fn=lambda _: None)
    assert len(card.accuracy_matrix) == 2 and (tmp_path / "run" / "report.json").exists()
    assert card.zero_shot is not None and 0.0 <= card.average_accuracy <= 1.0

"""The child learner: gradients reach every part, losses are finite, the head grows from descriptions."""

from __future__ import annotations

import inspect

import pytest
import torch

from continual.heads.compatibility import attribute_log_likelihood
from continual.learner import BACKBONES, LEARNERS
from continual.memory import ClassBalancedReservoir
from continual.stream.attributes import WORLD_ATTRIBUTES as SPACE


def _learner(memory_size: int = 16, backbone: str = "small_cnn", **kw):
    torch.manual_seed(0)
    codes = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 3, 0, 1], [3, 2, 1, 0], [0, 1, 2, 1], [5, 5, 3, 0]])
    memory = ClassBalancedReservoir(memory_size, (3, 32, 32), n_attributes=4)
    args = {"width": 8, "embed_dim": 16} if backbone == "small_cnn" else {}
    learner = LEARNERS.build("child", n_classes=6, image_shape=(3, 32, 32),
                             class_attributes=SPACE.vectors(codes), attribute_blocks=SPACE.sizes,
                             memory=memory, backbone=backbone, backbone_args=args, **kw)
    return learner, codes


def _batch(labels, codes):
    y = torch.tensor(labels)
    return torch.randint(0, 256, (len(y), 3, 32, 32), dtype=torch.uint8), y, codes[y]


def test_gradients_reach_backbone_class_and_attribute_heads():
    learner, codes = _learner()
    learner.begin_experience(0, [0, 1, 2])
    x, y, c = _batch([0, 1, 2, 0, 1, 2], codes)
    before = {n: p.detach().clone() for n, p in learner.named_parameters()}
    loss = learner.observe(x, y, c)
    assert torch.isfinite(loss) and loss.requires_grad is False
    changed = {n for n, p in learner.named_parameters() if not torch.equal(before[n], p)}
    assert any(n.startswith("backbone.") for n in changed)
    assert "class_head.weight" in changed and "attribute_head.linear.weight" in changed
    # Rows of categories not yet arrived get no update.
    assert torch.equal(before["class_head.weight"][3:], learner.class_head.weight[3:].detach())


def test_attribute_weight_zero_switches_the_attribute_heads_off():
    """The ablation's "no attribute heads": no head, no description-initialised rows, no zero-shot
    scores (an untrained head would otherwise still score categories, by chance)."""
    learner, codes = _learner(attribute_weight=0.0)
    assert learner.attribute_head is None and not learner.has_attributes and not learner.attribute_init
    learner.begin_experience(0, [0, 1, 2])
    assert torch.count_nonzero(learner.class_head.weight[:3]) > 0  # the usual random start, not a description
    learner.observe(*_batch([0, 1, 2, 0], codes))
    s = learner.scores(_batch([0, 1, 2], codes)[0])
    assert s.attribute_log_probs is None and s.class_logits.shape == (3, 3)


def test_new_category_classifier_starts_as_the_zero_shot_classifier():
    # A linear head's described row is exactly the zero-shot classifier (a cosine head's rows are
    # composed from the known categories instead: tests/test_one_look.py).
    learner, codes = _learner(head="linear")
    learner.begin_experience(0, [0, 1, 2])
    for _ in range(3):
        learner.observe(*_batch([0, 1, 2, 0, 1, 2], codes))
    learner.begin_experience(1, [3, 4, 5])
    x, _, _ = _batch([3, 4, 5, 3, 4, 5, 3, 4], codes)
    s = learner.scores(x)
    new_logits = s.class_logits[:, 3:6]
    zero_shot = attribute_log_likelihood(s.attribute_log_probs, learner.class_attributes[3:6])
    # Same ranking: they differ by a per-image constant (the attribute log-partition functions).
    diff = new_logits - zero_shot
    assert torch.allclose(diff, diff[:, :1].expand_as(diff), atol=1e-4)
    assert torch.equal(new_logits.argmax(1), zero_shot.argmax(1))


def test_head_grows_only_with_the_next_labels():
    learner, _ = _learner()
    learner.begin_experience(0, [0, 1])
    assert learner.scores(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).class_logits.shape == (2, 2)
    with pytest.raises(ValueError, match="expected the next"):
        learner.begin_experience(1, [4, 5])


def test_replay_is_mixed_into_each_step():
    learner, codes = _learner(memory_size=16, replay_batch_size=5)
    learner.begin_experience(0, [0, 1, 2])
    x, y, c = _batch([0, 1, 2] * 6, codes)
    learner.end_experience(0, x, y, c)
    assert len(learner.memory) == 16
    learner.begin_experience(1, [3, 4])
    learner.observe(*_batch([3, 4, 3, 4], codes))
    assert learner.last_batch_size == 4 + 5


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_embeds_uint8_images(name):
    if getattr(BACKBONES.get(name), "inputs", "images") == "vectors":  # feature-vector backbones (mlp): float (B, F)
        net = BACKBONES.build(name, in_channels=2048)
        z = net(torch.randn(3, 2048))
    else:
        # Pretrained torchvision ones at 32 px: their default 224 px is ~50x the compute (tests/test_pretrained.py).
        args = {"input_size": 32} if "input_size" in inspect.signature(BACKBONES.get(name)).parameters else {}
        net = BACKBONES.build(name, in_channels=3, **args)
        z = net(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    assert z.shape == (3, net.embed_dim) and torch.isfinite(z).all()


def test_unknown_names_list_the_known_ones():
    with pytest.raises(KeyError, match="known: .*small_cnn"):
        BACKBONES.get("resnet9000")
    with pytest.raises(KeyError, match="known: .*child"):
        LEARNERS.get("adult")

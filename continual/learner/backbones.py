"""Backbones: uint8 images (or, ``mlp``, float feature vectors) in, ``(B, D)`` embeddings out. Registered by name."""

from __future__ import annotations

import torch
from torch import nn

from continual.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone")


class ToFloat(nn.Module):
    """uint8 ``[0, 255]`` images to centred floats inside the model, so data stays uint8 on the device."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().mul_(1.0 / 127.5).sub_(1.0)
        return x


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@BACKBONES.register("small_cnn")
def small_cnn(in_channels: int = 3, width: int = 32, embed_dim: int = 128) -> nn.Module:
    """Four 3x3 conv blocks with pooling: the fast CPU default."""
    w = width
    layers = [ToFloat(), *_conv_bn(in_channels, w), nn.MaxPool2d(2),
              *_conv_bn(w, 2 * w), nn.MaxPool2d(2),
              *_conv_bn(2 * w, 4 * w), nn.MaxPool2d(2),
              *_conv_bn(4 * w, embed_dim), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    net = nn.Sequential(*layers)
    net.embed_dim = embed_dim
    return net


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@BACKBONES.register("reduced_resnet18")
def reduced_resnet18(in_channels: int = 3, width: int = 20, embed_dim: int | None = None) -> nn.Module:
    """ResNet-18 with ``width`` base filters (20 as in GEM/A-GEM): the GPU option."""
    stages, c_in, blocks = [], width, []
    for i, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for b in range(2):
            blocks.append(_BasicBlock(c_in, c_out, stride=2 if (b == 0 and i > 0) else 1))
            c_in = c_out
    stages = [ToFloat(), nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
              nn.ReLU(inplace=True), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    net = nn.Sequential(*stages)
    net.embed_dim = 8 * width
    if embed_dim is not None and embed_dim != net.embed_dim:
        net = nn.Sequential(net, nn.Linear(net.embed_dim, embed_dim))
        net.embed_dim = embed_dim
    return net


@BACKBONES.register("linear")
def linear(in_channels: int = 3, image_size: int = 32, embed_dim: int = 128) -> nn.Module:
    """One linear layer on raw pixels: a tiny model where framework overhead dominates."""
    net = nn.Sequential(ToFloat(), nn.Flatten(), nn.Linear(in_channels * image_size * image_size, embed_dim))
    net.embed_dim = embed_dim
    return net


@BACKBONES.register("mlp")
def mlp(in_channels: int, width: int = 512, embed_dim: int = 128) -> nn.Module:
    """Two linear layers with batch norm on feature vectors ``(B, F)`` (``in_channels`` = F, e.g. the 2048
    ResNet-101 features of the GBU splits; ``width`` hidden units, the name the CNNs use for their size):
    what trains on a precomputed-feature stream in seconds on a CPU.

    Why batch norm after each layer: published features are unnormalised (ResNet's post-ReLU means,
    0 to ~10, differing per data set); standardised layer outputs make one learning rate fit them all."""
    net = nn.Sequential(nn.Linear(in_channels, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                        nn.Linear(width, embed_dim, bias=False), nn.BatchNorm1d(embed_dim), nn.ReLU(inplace=True))
    net.embed_dim = embed_dim
    return net


mlp.inputs = "vectors"  # ClassifierLearner checks a stream's input shape against this (default: images)


def check_backbone(name: str, args: dict | None) -> None:
    """Config-time check of ``learner.backbone`` and ``learner.backbone_args``, building nothing.

    The name must be registered; the arguments must be the factory's (``in_channels`` comes from the
    stream) and of its types; a factory with a ``check_args`` (pretrained ones: the weights file) checks
    the values too.
    """
    from continual.config import ConfigError, check_tree, signature_schema  # lazy: config imports the registries

    try:
        factory = BACKBONES.get(name)
    except KeyError as err:
        raise ConfigError(f"config key learner.backbone: {err.args[0]}") from None
    args = dict(args or {})
    schema = signature_schema(factory, {"in_channels"})
    unknown = sorted(set(args) - set(schema))
    if unknown:
        raise ConfigError(f"unknown config key learner.backbone_args.{unknown[0]} for backbone {name}; known: "
                          f"{sorted(schema)} (to replace the arguments of another backbone: "
                          f"'~learner.backbone_args' '+learner.backbone_args={{...}}')")
    check_tree(args, schema, "learner.backbone_args.")
    check = getattr(factory, "check_args", None)
    if check is not None:
        try:
            check(**args)
        except FileNotFoundError:
            raise
        except ValueError as err:
            raise ConfigError(str(err)) from None

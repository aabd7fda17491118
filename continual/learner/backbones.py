"""Backbones: uint8 images in, ``(B, D)`` embeddings out. Registered by name."""

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

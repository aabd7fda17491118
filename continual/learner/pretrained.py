"""Pretrained torchvision backbones by name: ``resnet18``, ``resnet50``, ``resnet101``, ``vit_b_16``.

What continual zero-shot learning on CUB images uses (an ImageNet-pretrained ResNet), behind the same
``BACKBONES`` registry as the small CNNs: uint8 images in, ``(B, embed_dim)`` embeddings out, the
classification layer removed.

- Weights (``weights``): ``null`` (random initialisation, trained from scratch), a ``.pth`` file holding
  the model's ``state_dict`` (the classification layer's keys may be there or not), or ``imagenet`` (or a
  torchvision weights name such as ``IMAGENET1K_V2``): torchvision's own file, looked up under
  ``torch.hub.get_dir()/checkpoints`` where torchvision keeps what it downloaded. Nothing is ever
  downloaded: a missing file fails naming the path looked at and how to put it there.
- What trains (``train``): ``full``; ``frozen`` (nothing); ``partial``, the last ``trainable_stages``
  stages (ResNet: stem, layer1..layer4; ViT: patch embedding, then one stage per encoder block). Frozen
  parameters get no gradient (``requires_grad=False``: the optimisers skip them) and frozen modules stay
  in eval mode when the learner trains, so their batch-norm statistics never move (as ``FrozenTeacher``).
- Input (``ImageNetInput``): the stream's uint8 images become what the weights expect inside the module,
  on the device: ``[0, 1]``, grey repeated to RGB, resized to ``input_size`` (antialiased), ImageNet
  mean/std. The stream keeps its own (small) image size; only the batch is resized.

The arguments are checked at config time (``check_pretrained_args``, called from the learner's
``check_config``): a wrong name, a missing file or a file that does not fit the architecture (keys,
shapes) fails before the run folder is touched, without reading the tensors (a memory-mapped load).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from continual.learner.backbones import BACKBONES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_MODES = ("frozen", "partial", "full")
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Architecture:
    """How one torchvision model is cut: its embedding width, its classification layer and its stages."""

    embed_dim: int
    head: str  # the classification layer's attribute, replaced by an identity
    stages: tuple[tuple[str, ...], ...]  # parameter / module name prefixes, input side first
    patch_size: int | None = None  # ViT: input_size must be a multiple of it


_RESNET_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
_VIT_BLOCKS = 12
ARCHITECTURES: dict[str, Architecture] = {
    "resnet18": Architecture(512, "fc", _RESNET_STAGES),
    "resnet50": Architecture(2048, "fc", _RESNET_STAGES),
    "resnet101": Architecture(2048, "fc", _RESNET_STAGES),  # GBU's features are a ResNet-101's
    "vit_b_16": Architecture(
        768, "heads",
        (("conv_proj", "class_token", "encoder.pos_embedding"),
         *((f"encoder.layers.encoder_layer_{i}",) for i in range(_VIT_BLOCKS - 1)),
         (f"encoder.layers.encoder_layer_{_VIT_BLOCKS - 1}", "encoder.ln")),
        patch_size=16),
}


def _in_part(name: str, part: str) -> bool:
    return name == part or name.startswith(part + ".")


class ImageNetInput(nn.Module):
    """uint8 ``(B, C, H, W)`` images to what ImageNet weights expect: ``(B, 3, S, S)`` normalised floats.

    Float inputs are taken as already in ``[0, 1]``. Mean and std are non-persistent buffers: they move
    with the model and stay out of checkpoints.
    """

    def __init__(self, in_channels: int, input_size: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.in_channels, self.input_size = in_channels, input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().mul_(1.0 / 255.0) if x.dtype == torch.uint8 else x.float()
        if x.shape[1] == 1:  # grey (Omniglot): the weights were trained on RGB
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.input_size, self.input_size):
            # antialias: a downscale averages its footprint instead of sampling every k-th pixel.
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return (x - self.mean) / self.std  # (B, 3, S, S)


def _torchvision_weights(arch: str, name: str):
    """The torchvision weights enum member that ``weights=name`` means, or None when it is a path."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    if name.lower() == "imagenet":
        return enum.IMAGENET1K_V1  # the classic ImageNet-1k weights every architecture here has
    return enum.__members__.get(name)


def resolve_weights(arch: str, weights: str) -> tuple[Path, Any]:
    """The file that ``weights`` names for ``arch`` and the torchvision weights member (or None).

    Raises FileNotFoundError naming the path looked at and how to provide the file.
    """
    member = _torchvision_weights(arch, weights)
    if member is not None:
        file = member.url.rsplit("/", 1)[-1]
        path = Path(torch.hub.get_dir()) / "checkpoints" / file
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone {arch}: learner.backbone_args.weights={weights!r} means torchvision's {member} file, "
                f"looked for at {path}, which is not there (nothing is downloaded here). Put {file} there "
                f"(from {member.url}, or copy the torch hub cache of a machine that ran "
                f"torchvision.models.{arch}(weights='{member.name}')), point $TORCH_HOME at the folder that "
                f"holds hub/checkpoints/{file}, or give the file itself: learner.backbone_args.weights=/path/to/{file}")
        return path, member
    path = Path(weights).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path  # a relative path works from anywhere, as data roots do
    if not path.is_file():
        names = ", ".join(["imagenet", *_member_names(arch)])
        raise FileNotFoundError(
            f"backbone {arch}: weights file {path} (learner.backbone_args.weights={weights!r}) does not exist; "
            f"give a .pth file holding a torchvision {arch} state_dict (torch.save(model.state_dict(), path)), "
            f"one of {names} (looked up in {Path(torch.hub.get_dir()) / 'checkpoints'}), or null for random weights")
    return path, None


def _member_names(arch: str) -> list[str]:
    from torchvision.models import get_model_weights

    return list(get_model_weights(arch).__members__)


def _construct(arch: str, input_size: int) -> nn.Module:
    """The torchvision model with random weights and its classification layer replaced by an identity."""
    import torchvision.models as tvm

    spec = ARCHITECTURES[arch]
    kwargs = {"image_size": input_size} if spec.patch_size is not None else {}
    model = getattr(tvm, arch)(weights=None, **kwargs)
    setattr(model, spec.head, nn.Identity())
    return model


def read_state_dict(path: Path, arch: str, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The ``state_dict`` in ``path`` without the classification layer's keys; ValueError when it is not one.

    ``mmap``: map the file instead of reading it (zip-format files), for checking keys and shapes.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as err:
        if not mmap:
            raise ValueError(f"backbone {arch}: weights file {path} is not readable by torch.load ({err})") from None
        return read_state_dict(path, arch, mmap=False)  # an old (non-zip) file cannot be mapped
    except Exception as err:  # noqa: BLE001 - a pickle, a truncated file: the same answer
        raise ValueError(f"backbone {arch}: weights file {path} is not readable by torch.load "
                         f"({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint that wraps the weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"backbone {arch}: weights file {path} holds {type(state).__name__}, expected a "
                         f"state_dict (name -> tensor) of a torchvision {arch}")
    head = ARCHITECTURES[arch].head
    return {k: v for k, v in state.items() if not _in_part(k, head)}


def _fit_positions(state: dict[str, torch.Tensor], arch: str, input_size: int) -> dict[str, torch.Tensor]:
    """ViT: position embeddings of another image size interpolated to ``input_size`` (as torchvision does)."""
    spec = ARCHITECTURES[arch]
    key = "encoder.pos_embedding"
    if spec.patch_size is None or key not in state:
        return state
    wanted = (input_size // spec.patch_size) ** 2 + 1  # patches + class token
    if state[key].shape[1] == wanted:
        return state
    from torchvision.models.vision_transformer import interpolate_embeddings

    return dict(interpolate_embeddings(input_size, spec.patch_size, dict(state)))


def check_fit(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    """ValueError naming the file and what does not fit: missing keys, unexpected keys, wrong shapes."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{len(items)} {what} ({'; '.join(items[:5])}{more})")
    if problems:
        raise ValueError(f"backbone {arch}: weights file {path} does not fit a torchvision {arch}: "
                         f"{', '.join(problems)}; expected the state_dict of torchvision.models.{arch}() "
                         f"(torch.save(model.state_dict(), path))")


def check_pretrained_args(arch: str, in_channels: int = 3, weights: str | None = None, train: str = "full",
                          trainable_stages: int | None = None, input_size: int | None = None) -> None:
    """Raise ValueError (FileNotFoundError for a missing file) naming ``learner.backbone_args.<key>``.

    Reads no tensor: a weights file is mapped and its keys and shapes compared with the model's,
    built on the meta device.
    """
    spec = ARCHITECTURES[arch]
    n = len(spec.stages)
    if in_channels not in (1, 3):
        raise ValueError(f"backbone {arch} takes RGB (3 channels) or grey (1) images, got {in_channels} channels")
    if train not in TRAIN_MODES:
        raise ValueError(f"config key learner.backbone_args.train must be one of {', '.join(TRAIN_MODES)}, "
                         f"got {train!r}")
    if train == "partial":
        if trainable_stages is None or isinstance(trainable_stages, bool) or not 1 <= trainable_stages < n:
            raise ValueError(f"config key learner.backbone_args.trainable_stages must be in 1..{n - 1} with "
                             f"train=partial ({arch} has {n} stages: {', '.join('+'.join(s) for s in spec.stages)}), "
                             f"got {trainable_stages!r}")
    elif trainable_stages is not None:
        raise ValueError(f"config key learner.backbone_args.trainable_stages={trainable_stages} is for train=partial "
                         f"only; train={train} trains {'nothing' if train == 'frozen' else 'every stage'}")
    size = _input_size(arch, weights, input_size)
    if spec.patch_size is not None and (size < spec.patch_size or size % spec.patch_size):
        raise ValueError(f"config key learner.backbone_args.input_size must be a multiple of {arch}'s patch size "
                         f"{spec.patch_size}, got {size}")
    if spec.patch_size is None and size < 16:
        raise ValueError(f"config key learner.backbone_args.input_size must be >= 16 for {arch}, got {size}")
    if weights is not None:
        path, _ = resolve_weights(arch, weights)
        with torch.device("meta"):
            expected = _construct(arch, size).state_dict()
        check_fit(_fit_positions(read_state_dict(path, arch, mmap=True), arch, size), expected, arch, path)


def _input_size(arch: str, weights: str | None, input_size: int | None) -> int:
    """``input_size``, or what the named torchvision weights were trained at (224 otherwise)."""
    if input_size is not None:
        return input_size
    member = _torchvision_weights(arch, weights) if weights is not None else None
    return int(member.transforms().crop_size[0]) if member is not None else 224


class PretrainedBackbone(nn.Module):
    """A torchvision trunk behind ``ImageNetInput``: uint8 images in, ``(B, embed_dim)`` embeddings out.

    Frozen stages (``train``, ``trainable_stages``) have ``requires_grad=False`` and stay in eval mode
    whatever ``train()`` is called with, so batch-norm statistics and dropout stay as loaded.
    """

    # The memory budget (continual.memory.budget) counts frozen submodules as copies of the model
    # (an old model, statistics); a frozen backbone is the model itself, which every method has.
    counts_as_model = True

    def __init__(self, arch: str, in_channels: int = 3, weights: str | None = None, train: str = "full",
                 trainable_stages: int | None = None, input_size: int | None = None) -> None:
        super().__init__()
        check_pretrained_args(arch, in_channels, weights, train, trainable_stages, input_size)
        spec = ARCHITECTURES[arch]
        self.arch, self.weights, self.train_mode = arch, weights, train
        self.embed_dim = spec.embed_dim
        size = _input_size(arch, weights, input_size)
        self.input = ImageNetInput(in_channels, size)
        if weights is None:
            self.trunk = _construct(arch, size)
        else:
            path, _ = resolve_weights(arch, weights)
            state = _fit_positions(read_state_dict(path, arch), arch, size)
            with torch.device("meta"):  # no random initialisation to throw away: every tensor comes from the file
                self.trunk = _construct(arch, size)
            check_fit(state, self.trunk.state_dict(), arch, path)
            self.trunk.load_state_dict(state, strict=True, assign=True)
            left = [k for k, t in self.trunk.state_dict().items() if t.is_meta]
            if left:  # a torchvision whose model holds tensors no state_dict carries
                raise RuntimeError(f"{arch}: {left} not set from {path}")
            self.weights_file = str(path)
        n = len(spec.stages)
        n_trainable = {"frozen": 0, "partial": trainable_stages, "full": n}[train]
        self.frozen_parts = tuple(p for stage in spec.stages[:n - n_trainable] for p in stage)
        self._check_stages_cover(spec)
        for name, p in self.trunk.named_parameters():
            p.requires_grad_(not any(_in_part(name, part) for part in self.frozen_parts))
        modules = dict(self.trunk.named_modules())
        # Parts that are modules go to eval mode; class_token and pos_embedding are bare parameters.
        self._frozen_modules = [modules[p] for p in self.frozen_parts if p in modules]
        self.train(True)

    def _check_stages_cover(self, spec: Architecture) -> None:
        # Every weight in exactly one stage: a torchvision that renames a layer fails here, not silently.
        parts = [p for stage in spec.stages for p in stage]
        for name, _ in self.trunk.named_parameters():
            owners = [p for p in parts if _in_part(name, p)]
            if len(owners) != 1:
                raise RuntimeError(f"{self.arch}: parameter {name} is in {len(owners)} stages ({owners}), expected one")

    def train(self, mode: bool = True) -> "PretrainedBackbone":
        super().train(mode)
        for module in self._frozen_modules:  # batch-norm statistics of frozen stages must not move
            module.train(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.input(x))  # (B, embed_dim)


def _register(arch: str) -> None:
    def factory(in_channels: int = 3, weights: str | None = None, train: str = "full",
                trainable_stages: int | None = None, input_size: int | None = None) -> nn.Module:
        return PretrainedBackbone(arch, in_channels, weights, train, trainable_stages, input_size)

    factory.__name__ = factory.__qualname__ = arch
    factory.__doc__ = (f"torchvision {arch} ({ARCHITECTURES[arch].embed_dim}-d embedding): weights from a file "
                       f"or the torch hub cache, frozen, partly or fully trained")

    def check_args(**args: Any) -> None:
        check_pretrained_args(arch, **args)

    factory.check_args = check_args
    BACKBONES.register(arch)(factory)


for _arch in ARCHITECTURES:
    _register(_arch)

__all__ = ["ARCHITECTURES", "IMAGENET_MEAN", "IMAGENET_STD", "ImageNetInput", "PretrainedBackbone",
           "check_pretrained_args", "resolve_weights"]

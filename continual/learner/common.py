"""Pieces every learner here shares: backbone + growing category head + optimiser, and the losses
several baselines use (masked cross-entropy, distillation, a frozen teacher, end-of-experience fitting).

``ClassifierLearner`` is the class-only shell: ``child`` adds attribute heads on top of it, the
baselines add their rules to ``observe`` / ``end_experience``. Nothing here reads a tensor value
back to the host, so every piece may be used inside ``observe``.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from continual.heads import GrowingClassHead
from continual.learner.backbones import BACKBONES, check_backbone
from continual.learner.base import Learner, Scores


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam or SGD (momentum 0.9) by name."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"learner.optimizer must be 'adam' or 'sgd', got {name!r}")


def check_non_negative(**values: float) -> None:
    """Raise ``ValueError`` naming ``learner.<key>`` for the first negative value."""
    for key, value in values.items():
        if value < 0:
            raise ValueError(f"learner.{key} must be >= 0, got {value}")


def check_backbone_inputs(backbone: str, image_shape: tuple[int, ...]) -> None:
    """Fail naming ``learner.backbone`` when it cannot read the stream's inputs: images ``(C, H, W)`` or
    feature vectors ``(F,)`` (a backbone says which in its factory's ``inputs``; images by default)."""
    wants = getattr(BACKBONES.get(backbone), "inputs", "images")
    got = "vectors" if len(image_shape) == 1 else "images"
    if wants != got:
        fits = [n for n in BACKBONES.names() if getattr(BACKBONES.get(n), "inputs", "images") == got]
        raise ValueError(f"learner.backbone={backbone} reads {wants} but this stream's inputs are {got} of shape "
                         f"{tuple(image_shape)}: use learner.backbone={' or '.join(fits)}")


class ClassifierLearner(Learner):
    """A backbone and a growing category head trained by one optimiser; class-only ``scores``.

    Subclasses that add modules (``child``'s attribute heads) call ``reset_optimizer`` once they
    exist, so the optimiser covers them too.
    """

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...], backbone: str = "small_cnn",
                 backbone_args: dict | None = None, optimizer: str = "adam", lr: float = 1e-3,
                 weight_decay: float = 0.0, amp: bool = True, channels_last: bool = False,
                 cosine_scale: float | None = None) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"learner.lr must be > 0, got {lr}")
        check_non_negative(weight_decay=weight_decay)
        self.backbone_name, self.backbone_args = backbone, dict(backbone_args or {})
        check_backbone_inputs(backbone, image_shape)
        if channels_last and len(image_shape) != 3:
            raise ValueError(f"learner.channels_last lays out images (C, H, W); this stream's inputs have shape "
                             f"{tuple(image_shape)}: set learner.channels_last=false")
        self.backbone = BACKBONES.build(backbone, in_channels=image_shape[0], **self.backbone_args)
        self.class_head = GrowingClassHead(self.backbone.embed_dim, n_classes, cosine_scale)
        self.channels_last = channels_last
        if channels_last:
            # Weights in channels_last too (``_embed`` converts the inputs), so convs never convert formats.
            self.backbone.to(memory_format=torch.channels_last)
        self.amp = amp
        self.optimizer_args = (optimizer, lr, weight_decay)
        self.reset_optimizer()

    @staticmethod
    def check_config(backbone: str = "small_cnn", backbone_args: dict | None = None, **_) -> None:
        """Config-time check of ``learner.backbone`` and its arguments (a pretrained backbone's weights
        file included), so that they fail before the run folder is touched; builds nothing."""
        check_backbone(backbone, backbone_args)

    def reset_optimizer(self) -> None:
        """A fresh optimiser over every parameter (no moments carried over). Frozen parameters
        (``requires_grad=False``: a frozen pretrained backbone) never get a gradient, so Adam and SGD
        leave them as they are."""
        self.optimizer = make_optimizer(self.parameters(), *self.optimizer_args)

    def _autocast(self, device: torch.device):
        # bf16 autocast on CUDA only: on the CPU it is slower than float32 for these convs.
        if self.amp and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_active)`` category logits, no autocast (what ``torch.func`` transforms call)."""
        return self.class_head(self._embed(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_active)`` float32 category logits, under bf16 autocast on CUDA."""
        with self._autocast(x.device):
            return self(x).float()

    def check_next_labels(self, where: str, new_classes: list[int]) -> None:
        """Labels arrive in order, so the new categories must be the next rows of the head."""
        start = self.class_head.n_active
        if new_classes != list(range(start, start + len(new_classes))):
            raise ValueError(f"{where} brings labels {new_classes}, expected the next {len(new_classes)} after {start}")

    def begin_experience(self, experience: int, new_classes: list[int]) -> None:
        self.check_next_labels(f"experience {experience}", new_classes)
        self.class_head.grow(len(new_classes))

    def meet(self, new_classes: list[int]) -> None:
        self.check_next_labels("the stream", new_classes)
        self.class_head.grow(len(new_classes))

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        """One optimiser step on ``loss``; returns it detached (still on the device)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def cross_entropy_step(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Plain cross-entropy over every category seen so far on one batch (``codes`` unused)."""
        self.train()
        self.last_batch_size = len(y)
        return self.step(F.cross_entropy(self.train_forward(self.logits, x), y))

    @torch.inference_mode()
    def features(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """``(N, D)`` float32 embeddings in eval mode, in batches (outside the hot loop)."""
        self.eval()
        out = []
        for start in range(0, len(x), batch_size):
            with self._autocast(x.device):
                out.append(self._embed(x[start:start + batch_size]).float())
        return torch.cat(out) if out else torch.zeros(0, self.backbone.embed_dim, device=x.device)

    @torch.inference_mode()
    def scores(self, x: torch.Tensor) -> Scores:
        self.eval()
        with self._autocast(x.device):
            z = self._embed(x)
            logits = self.class_head(z).float()
        return Scores(class_logits=logits, attribute_log_probs=None, embedding=z.float())


def with_replay(memory, n: int, x: torch.Tensor, y: torch.Tensor,
                codes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The batch with ``n`` memory examples appended (unchanged when the memory is empty or ``n == 0``).

    ``len(memory)`` is a host-side counter, so the check costs no device sync.
    """
    if len(memory) > 0 and n > 0:
        xr, yr, cr = memory.sample(n)
        x, y = torch.cat([x, xr]), torch.cat([y, yr])
        codes = torch.cat([codes, cr]) if codes is not None else None
    return x, y, codes


def present_classes_mask(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(n_classes,)`` bool: which categories occur in ``y``; a scatter, so no sync (unlike ``unique``)."""
    return torch.zeros(n_classes, dtype=torch.bool, device=y.device).scatter_(0, y, True)


def masked_cross_entropy(logits: torch.Tensor, y: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Cross-entropy choosing only among ``allowed`` ``(K,)`` bool columns of ``(B, K)`` logits.

    Disallowed columns get the most negative float rather than ``-inf``: no ``inf - inf`` NaNs.
    The target's own column must be allowed.
    """
    return F.cross_entropy(logits.masked_fill(~allowed, torch.finfo(logits.dtype).min), y)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton distillation: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, batch mean.

    ``student`` and ``teacher`` are ``(B, K)`` logits over the same K (old) categories; the ``T^2``
    factor keeps the gradient scale independent of the temperature.
    """
    log_p_student = F.log_softmax(student / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * temperature ** 2


class FrozenTeacher(nn.Module):
    """A frozen copy of a learner's backbone and category head: always in eval mode, never trained.

    It is a submodule of its learner, so its weights (and its head's ``n_active``, the number of
    old categories) are in the learner's ``state_dict`` and move with ``.to(device)``.
    """

    def __init__(self, learner: ClassifierLearner) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(learner.backbone)
        self.class_head = copy.deepcopy(learner.class_head)
        self.class_head.n_active = 0  # nothing to distil before the first experience ends
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenTeacher":
        # Stay in eval mode when the learner switches to training: batch-norm statistics must not move.
        return super().train(False)

    @property
    def n_classes(self) -> int:
        """Categories the teacher knows (0 before the first experience ends); a host-side int."""
        return self.class_head.n_active

    @torch.no_grad()
    def refresh(self, learner: ClassifierLearner) -> None:
        """Become a copy of ``learner``'s current backbone and head."""
        self.backbone.load_state_dict(learner.backbone.state_dict())
        self.class_head.load_state_dict(learner.class_head.state_dict())

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_head(self.backbone(x)).float()  # (B, n_old) logits


def fit(step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor], x: torch.Tensor,
        y: torch.Tensor, codes: torch.Tensor | None, *, epochs: int, batch_size: int) -> torch.Tensor:
    """``epochs`` passes of shuffled mini-batches of ``(x, y, codes)`` through ``step``; summed loss.

    For learners that train at an experience's end (``joint``, ``gdumb``). The order comes from the
    global torch generator, which checkpoints save and restore, so a resumed run draws the same.
    """
    loss_sum = torch.zeros((), device=y.device)
    for _ in range(epochs):
        for b in torch.randperm(len(y)).to(y.device).split(batch_size):
            if len(b) < 2:  # batch norm needs two images
                continue
            loss_sum += step(x[b], y[b], codes[b] if codes is not None else None)
    return loss_sum

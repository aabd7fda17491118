"""The child learner: a backbone, a growing category head, attribute heads and replay.

Each add-on is an object this class calls explicitly in ``observe``: the replay memory
(``memory.sample`` then ``memory.update`` at the experience's end), the attribute head (an extra
loss term), the description-initialised classifier (in ``begin_experience``), fast binding of a
new category's row from its first examples (``FastBinding``, before the step's loss) and the
class-prior logit adjustment of the loss (Menon et al. 2021). The backbone, category head and
optimiser come from ``ClassifierLearner``, which the baselines share.

Every mechanism has its switch, for ablations: ``head=linear`` (no cosine normalisation),
``bind=false`` (rows learned by gradient alone), ``description_weight=0`` (examples override the
description at once), ``logit_adjustment=0`` (plain cross-entropy), ``attribute_init=false``,
``attribute_weight=0``. From noisy tags (``continual.heads.tag_votes``): ``descriptions=tags`` describes
trained categories by the majority vote of their images' tags instead of the stream's clean descriptions,
``attribute_targets=votes`` trains the attribute heads on that vote instead of each image's own tags.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
import torch.nn.functional as F

from continual.config import ConfigError
from continual.heads import AttributeHead, FastBinding
from continual.heads.binding import rows_from_descriptions
from continual.heads.tag_votes import TagVotes
from continual.learner.base import LEARNERS, Scores
from continual.learner.augment import RandomAffine
from continual.learner.nuisance import NuisanceVariation, check_transforms
from continual.learner.common import ClassifierLearner, make_optimizer, with_replay
from continual.memory import ClassBalancedReservoir

__all__ = ["ChildLearner", "make_optimizer"]


ONLINE_PRIOR_STEPS = 50  # learner.prior_steps=auto on an online stream: the class prior's horizon, in steps


@LEARNERS.register("child")
class ChildLearner(ClassifierLearner):
    """Replay + attribute abstraction heads + description-initialised category classifiers."""

    supports_ddp = True  # the embedding goes through ``train_forward``; the heads follow it
    supports_online = True  # ``meet`` starts rows from descriptions; binding needs no boundary

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...], class_attributes: torch.Tensor | None,
                 attribute_blocks: tuple[int, ...] | None, memory: ClassBalancedReservoir,
                 backbone: str = "small_cnn", backbone_args: dict | None = None,
                 attribute_weight: float = 1.0, attribute_init: bool = True, replay_batch_size: int = 64,
                 head: str = "cosine", cosine_scale: float = 16.0, bind: bool = True, bind_window: int = 10,
                 bind_protect: bool = True, augment: bool = False, augment_args: dict | None = None,
                 description_weight: float = 0.25, logit_adjustment: float = 1.0, prior_steps: int | str = "auto",
                 descriptions: str = "given", attribute_targets: str = "tags", nuisance_variation: int = 32,
                 nuisance_transforms: list[str] | None = None, nuisances: tuple[tuple[str, tuple[int, ...]], ...] = (),
                 optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                 amp: bool = True, channels_last: bool = False, compile: bool = False, online: bool = False) -> None:
        if prior_steps == "auto":
            # Online, the categories met last are always the rarest in a running count, though they are
            # what the learner now sees most: a prior over recent steps tracks what training sees.
            prior_steps = ONLINE_PRIOR_STEPS if online else 0
        if isinstance(prior_steps, bool) or not isinstance(prior_steps, int) or prior_steps < 0:
            raise ValueError(f"learner.prior_steps must be 'auto' or an int >= 0 (0: all steps so far), got {prior_steps!r}")
        if attribute_weight < 0:
            raise ValueError(f"learner.attribute_weight must be >= 0, got {attribute_weight}")
        if replay_batch_size < 0:
            raise ValueError(f"learner.replay_batch_size must be >= 0, got {replay_batch_size}")
        if head not in ("linear", "cosine"):
            raise ValueError(f"learner.head must be 'linear' or 'cosine', got {head!r}")
        if logit_adjustment < 0:
            raise ValueError(f"learner.logit_adjustment must be >= 0, got {logit_adjustment}")
        super().__init__(n_classes=n_classes, image_shape=image_shape, backbone=backbone,
                         backbone_args=backbone_args, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         amp=amp, channels_last=channels_last,
                         cosine_scale=cosine_scale if head == "cosine" else None)
        dim = self.backbone.embed_dim
        # attribute_weight = 0 switches the heads off entirely (the ablation): untrained heads would
        # otherwise still start classifier rows and score zero-shot, by chance.
        self.has_attributes = class_attributes is not None and attribute_blocks is not None and attribute_weight > 0
        # attribute_blocks == (): continuous attributes, one Bernoulli per column of class_attributes.
        n_continuous = class_attributes.shape[1] if self.has_attributes and not attribute_blocks else 0
        self.attribute_head = AttributeHead(dim, attribute_blocks, n_continuous) if self.has_attributes else None
        if self.has_attributes:
            self.register_buffer("class_attributes", class_attributes.float(), persistent=False)
        self.attribute_weight = attribute_weight
        self.attribute_init = attribute_init and self.has_attributes
        if descriptions not in ("given", "tags"):
            raise ValueError(f"learner.descriptions must be 'given' or 'tags', got {descriptions!r}")
        if attribute_targets not in ("tags", "votes"):
            raise ValueError(f"learner.attribute_targets must be 'tags' or 'votes', got {attribute_targets!r}")
        # Tag votes (continual.heads.tag_votes), counted from every training image's tags as it is trained on:
        # descriptions=tags describes the trained categories by them (given: the stream's clean descriptions);
        # attribute_targets=votes trains the attribute heads on an image's category vote, not its own tags.
        self.attribute_targets = attribute_targets
        voting = descriptions == "tags" or attribute_targets == "votes"
        self.tag_votes = TagVotes(n_classes, attribute_blocks) if voting and self.has_attributes else None
        self.descriptions = descriptions
        # Copies of each step's new images with a nuisance varied (continual.learner.nuisance): evidence that
        # the other attributes stay when one changes. ``nuisances`` come from the stream's attribute space.
        variation = NuisanceVariation(nuisances if self.has_attributes else (), nuisance_variation, nuisance_transforms)
        self.variation = variation if variation.active else None
        self.memory = memory
        self.replay_batch_size = replay_batch_size
        self.binding = FastBinding(dim, n_classes, bind_window, description_weight) if bind else None
        self.bind_protect = bind_protect and bind
        self.logit_adjustment = logit_adjustment
        self.prior_decay = 1.0 - 1.0 / prior_steps if prior_steps else 1.0  # per step, on the running label counts
        if augment and len(image_shape) != 3:
            raise ValueError(f"learner.augment distorts images (C, H, W); this stream's inputs have shape "
                             f"{tuple(image_shape)} (feature vectors): set learner.augment=false")
        self.augment = RandomAffine(**(augment_args or {})) if augment else None
        # (C,) training labels seen so far, replay included: the class prior pi of the adjusted loss.
        self.register_buffer("label_counts", torch.zeros(n_classes))
        if channels_last:
            # Weights in channels_last too (inputs already are), so convolutions never convert formats.
            self.backbone.to(memory_format=torch.channels_last)
        if compile:
            # In place (nn.Module.compile): parameter names, and so checkpoints, stay the eager model's.
            self.backbone.compile()
        self.reset_optimizer()  # again, now that the attribute head's parameters exist
        # Memory prototypes are computed once per state: one evaluation asks for them several times (the test
        # set's description scores, calibration's gap). Every method that changes weights, memory or rows
        # bumps ``_changes`` (``_changed``), which drops them.
        self._changes, self._prototypes = 0, None

    def _changed(self) -> None:
        self._changes += 1

    @staticmethod
    def check_config(nuisance_transforms: list[str] | None = None, **cfg) -> None:
        """The backbone's check, and ``learner.nuisance_transforms`` names registered transforms."""
        ClassifierLearner.check_config(**cfg)
        try:
            check_transforms(nuisance_transforms)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def begin_experience(self, experience: int, new_classes: list[int]) -> None:
        self._changed()
        self.check_next_labels(f"experience {experience}", new_classes)
        self._start_rows(new_classes)

    def meet(self, new_classes: list[int]) -> None:
        # Online: the same start from the description, as the label first appears; binding then
        # writes the rows from the first examples of the very batch that brings them.
        self._changed()
        self.check_next_labels("the stream", new_classes)
        self._start_rows(new_classes)

    def _start_rows(self, new_classes: list[int]) -> None:
        """Head rows for ``new_classes``: from their descriptions where there are any, open to binding."""
        weight = bias = None
        if self.attribute_init:
            weight, bias = self.attribute_head.describe_classes(self.class_attributes[new_classes])
            known = self.class_head.n_active
            if self.class_head.cosine and known > 0:
                # Rows where the described categories' images should lie, mapped from the known ones.
                weight = rows_from_descriptions(self.class_attributes[new_classes], self._known_descriptions(known),
                                                self.class_head.weight[:known])
            if self.binding is not None:
                self.binding.describe(new_classes, weight)
        self.class_head.grow(len(new_classes), weight, bias)
        if self.binding is not None:
            self.binding.reopen()

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        self._changed()
        self.train()
        n_new = len(y)
        x, y, codes = with_replay(self.memory, self.replay_batch_size, x, y, codes)
        if self.tag_votes is not None and codes is not None:
            # The current images' tags (not replay's, counted when they were current): every epoch counts
            # each image once more, which leaves a majority as it is.
            self.tag_votes.count(y[:n_new], codes[:n_new])
            if self.attribute_targets == "votes":
                codes = self.tag_votes.targets(y)  # (B, A) what is said of each image's category
        self.last_batch_size = len(y)
        x_train = self.augment(x) if self.augment is not None else x  # binding sees the real images
        n_var = 0
        if self.variation is not None and codes is not None:
            x_var, codes_var = self.variation(x_train, codes, n_new)
            n_var = len(x_var)
            x_train = torch.cat([x_train, x_var])  # one forward (DDP counts one per step)
        with self._autocast(x.device):
            z_all = self.train_forward(self._embed, x_train)  # (B + n_var, D)
            z = z_all[: len(y)]
            z_class = z
            if self.binding is not None and self.binding.live:  # rows inside their window: written, then refined
                self.binding.observe(self._eval_embed(x[:n_new]), y[:n_new])
                bound, rows = self.binding.rows()
                self.class_head.write_rows(bound, rows)
                self._fresh_optimizer_state(bound)
                if self.bind_protect:
                    # A category inside its window is held by its row; its few examples refine that row
                    # but their category loss does not pull the backbone towards themselves (their
                    # attribute targets still train it).
                    z_class = torch.where(bound[y][:, None], z.detach(), z)
            logits = self.class_head(z_class).float()  # (B, n_active)
            if self.logit_adjustment > 0:
                logits = logits + self.logit_adjustment * self._log_prior(y, logits.shape[1])
            loss = F.cross_entropy(logits, y)
            if self.has_attributes and codes is not None:  # no codes: categories met without a description
                if n_var:  # the varied copies train the attribute heads only (module docstring of nuisance.py)
                    z, codes = z_all, torch.cat([codes, codes_var])
                loss = loss + self.attribute_weight * self.attribute_head.loss(self.attribute_head(z).float(), codes)
        loss = self.step(loss)
        if self.binding is not None:
            self.binding.still_open(self.class_head.n_active)
        return loss

    @torch.no_grad()
    def _fresh_optimizer_state(self, rows: torch.Tensor) -> None:
        """Give the head rows just written (``rows`` (C,) bool) Adam moments of a settled row.

        A written row is a new value, but Adam's bias correction is per tensor: a row that joins
        late (a category met after thousands of steps) starts with a second moment near zero and
        no correction for it, so its first gradients become steps of ~3 ``lr`` per coordinate that
        momentum carries on for dozens of steps, wearing the bound row away (meeting Omniglot
        characters one at a time: 0.45 of 71 recognised at the end, 0.67 with this). So the row's
        first moment is cleared and its second moment set to the mean of the other active rows'.
        """
        state = self.optimizer.state.get(self.class_head.weight)
        if not state or "exp_avg_sq" not in state:  # no step taken yet, or not Adam
            return
        v, m = state["exp_avg_sq"], state["exp_avg"]  # (C, D) each
        active = torch.arange(len(rows), device=rows.device) < self.class_head.n_active
        others = (active & ~rows).to(v.dtype)[:, None]  # (C, 1) settled rows
        typical = (v * others).sum(0) / others.sum().clamp(min=1)  # (D,)
        v.copy_(torch.where(rows[:, None], typical, v))
        m.masked_fill_(rows[:, None], 0.0)

    def _eval_embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` embeddings as evaluation computes them (batch norm on running statistics).

        Why not the training forward's: its batch statistics depend on what shares the batch (a
        category met alone, 15 images of one character, moves them far), and a bound row must sit
        where the category's test images will land.
        """
        try:
            return self.features(x)
        finally:
            self.train()  # ``features`` leaves the learner in eval mode

    def _log_prior(self, y: torch.Tensor, n_active: int) -> torch.Tensor:
        """``(n_active,)`` log class prior of everything trained on so far, this batch included (over
        about the last ``prior_steps`` steps when that is set: ``prior_decay`` per step).

        Adding it to the training logits (and not at test time) is Menon et al.'s logit-adjusted
        loss: a frequent category must win by its prior's margin, so rare ones keep their share
        of the decision space. Counts start at one, so an active category not met yet is rare,
        not impossible.
        """
        delta = torch.zeros_like(self.label_counts).index_add_(0, y, torch.ones_like(y, dtype=self.label_counts.dtype))
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(delta)  # one prior for all processes: the whole batch's labels
        if self.prior_decay < 1.0:
            self.label_counts.mul_(self.prior_decay)
        self.label_counts += delta
        counts = self.label_counts[:n_active] + 1
        return (counts / counts.sum()).log()

    def checkpoint_state(self) -> dict:
        state = super().checkpoint_state()
        if self.binding is not None:  # host-side: when binding next reads the device (a checkpoint may fall mid-experience)
            state["binding_host"] = {"live": self.binding.live, "steps": self.binding._steps}
        return state

    def load_checkpoint_state(self, state: dict) -> None:
        self._changed()
        super().load_checkpoint_state(state)
        if self.binding is not None and "binding_host" in state:
            self.binding.live, self.binding._steps = bool(state["binding_host"]["live"]), int(state["binding_host"]["steps"])

    def end_experience(self, experience: int, x: torch.Tensor, y: torch.Tensor,
                       codes: torch.Tensor | None) -> None:
        self._changed()
        self.memory.update(x, y, codes)

    def remember(self, x: torch.Tensor, y: torch.Tensor, y_host: torch.Tensor, codes: torch.Tensor | None) -> None:
        self._changed()
        super().remember(x, y, y_host, codes)

    def _known_descriptions(self, known: int) -> torch.Tensor:
        """``(known, dim)`` descriptions of the categories trained so far (labels ``0..known-1``): the
        given ones, or (``descriptions=tags``) the majority vote of the tags seen so far."""
        if self.tag_votes is None or self.descriptions == "given":
            return self.class_attributes[:known]
        return self.tag_votes.descriptions()[:known]

    @torch.inference_mode()
    def scores(self, x: torch.Tensor) -> Scores:
        s = super().scores(x)  # category logits and the embedding
        if not self.has_attributes:
            return s
        with self._autocast(x.device):  # the same precision the embedding was computed in
            log_p = self.attribute_head.log_probs(self.attribute_head(s.embedding).float())
        return dataclasses.replace(s, attribute_log_probs=log_p)

    @torch.inference_mode()
    def description_scores(self, embedding: torch.Tensor, class_attributes: torch.Tensor, n_known: int,
                           anchors: str = "prototypes") -> torch.Tensor | None:
        # A described category gets a row mapped from its description by the known categories (the ridge
        # map that starts a new category's row), scored like every cosine row. ``prototypes``: the map
        # takes descriptions to where the known categories' images lie in the memory (a head row
        # separates categories but is not where their images are, and a map fitted to rows places a new
        # one less well: zero-shot 84% against 76% on the default world); ``rows``: to their head rows.
        # A linear head has no such scale (rows of any norm, biases): None, and GZSL uses attributes.
        if not (self.has_attributes and self.class_head.cosine) or n_known < 1:
            return None
        if anchors not in ("prototypes", "rows"):
            raise ValueError(f"anchors must be 'prototypes' or 'rows', got {anchors!r}")
        targets = self.class_head.weight[:n_known].float()  # (n_known, D)
        if anchors == "prototypes":
            targets = self._memory_prototypes(n_known, targets)
        rows = rows_from_descriptions(class_attributes.to(embedding.device), self._known_descriptions(n_known),
                                      targets)  # (C, D)
        return self.class_head.cosine_scale * F.normalize(embedding.float(), dim=1) @ F.normalize(rows, dim=1).T

    @torch.inference_mode()
    def _memory_prototypes(self, n_known: int, fallback: torch.Tensor) -> torch.Tensor:
        """``(n_known, D)`` the mean normalised embedding of each known category's memory images (eval mode),
        ``fallback``'s row for a category the memory holds none of; computed once per state (``_changed``)."""
        key = (self._changes, n_known, len(self.memory))
        if self._prototypes is not None and self._prototypes[0] == key:
            return self._prototypes[1]
        self._prototypes = (key, self._compute_prototypes(n_known, fallback))
        return self._prototypes[1]

    def _compute_prototypes(self, n_known: int, fallback: torch.Tensor) -> torch.Tensor:
        held = self.replay_examples()
        if held is None:
            return fallback
        x, y = held
        keep = y < n_known
        z = F.normalize(self.features(x[keep]), dim=1)  # (M, D)
        y = y[keep]
        sums = torch.zeros_like(fallback).index_add_(0, y, z)
        counts = torch.zeros(n_known, device=z.device).index_add_(0, y, torch.ones_like(y, dtype=z.dtype))
        return torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], F.normalize(fallback, dim=1))

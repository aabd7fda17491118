"""Learners: a model plus the rules for updating it from a stream. Registered by name."""

from continual.learner import child  # noqa: F401  (registers "child")
from continual.learner import derpp  # noqa: F401  (registers "derpp")
from continual.learner import er  # noqa: F401  (registers "er")
from continual.learner import er_ace  # noqa: F401  (registers "er_ace")
from continual.learner import ewc  # noqa: F401  (registers "ewc")
from continual.learner import finetune  # noqa: F401  (registers "finetune")
from continual.learner import gdumb  # noqa: F401  (registers "gdumb")
from continual.learner import icarl  # noqa: F401  (registers "icarl")
from continual.learner import joint  # noqa: F401  (registers "joint")
from continual.learner import lwf  # noqa: F401  (registers "lwf")
from continual.learner import pretrained  # noqa: F401  (registers "resnet18", "resnet50", "resnet101", "vit_b_16")
from continual.learner.backbones import BACKBONES
from continual.learner.base import LEARNERS, Learner, Scores

__all__ = ["BACKBONES", "LEARNERS", "Learner", "Scores"]

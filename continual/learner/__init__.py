"""Learners: a model plus the rules for updating it from a stream. Registered by name."""

from continual.learner import child  # noqa: F401  (registers "child")
from continual.learner.backbones import BACKBONES
from continual.learner.base import LEARNERS, Learner, Scores

__all__ = ["BACKBONES", "LEARNERS", "Learner", "Scores"]

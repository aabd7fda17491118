"""Heads on top of a backbone embedding: categories, attributes, and the bridge between them."""

from continual.heads.attribute_head import AttributeHead
from continual.heads.binding import FastBinding
from continual.heads.class_head import GrowingClassHead
from continual.heads.compatibility import attribute_log_likelihood

__all__ = ["AttributeHead", "FastBinding", "GrowingClassHead", "attribute_log_likelihood"]

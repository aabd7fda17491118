"""Bounded replay memory."""

from continual.memory.reservoir import ClassBalancedReservoir

__all__ = ["ClassBalancedReservoir"]

"""Thin wrappers that give every VLA the same interface (see :mod:`ivra.policies.base`)."""

from ivra.policies.base import Policy

__all__ = ["Policy"]

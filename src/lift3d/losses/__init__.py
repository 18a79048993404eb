"""Losses: stateless functions (drifting objective, tri-planar drifting loss, translation losses)."""

from __future__ import annotations

from lift3d.losses.drifting import drift_field, drifting_loss

__all__ = ["drift_field", "drifting_loss"]

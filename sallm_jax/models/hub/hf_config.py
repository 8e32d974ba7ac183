"""config.json pieces the families' writers share."""

from __future__ import annotations

from collections.abc import Mapping


def hf_rope(text: Mapping) -> dict:
    """A text_config dict with rope theta where both readers look: `rope_parameters` (5.x) and
    the top level (4.x)."""
    text = dict(text)
    theta = text.pop("rope_theta")
    return {
        **text,
        "rope_theta": theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
    }

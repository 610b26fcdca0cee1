"""Named model sizes. Each is a set of option defaults; any option given explicitly wins. The
sizes themselves are in the defaults table (``charrnn.options``); this is how a run picks one."""

from __future__ import annotations

from charrnn.options import DEFAULT_PRESET, GPU_DEFAULT_OVERRIDES, GPU_DEFAULT_PRESET, PRESET_TRAINING, PRESETS


def resolve_preset(preset: str | None, device_type: str) -> tuple[str, dict]:
    """The preset's name and model options: those of ``preset``, or the device's default."""
    if preset:
        return preset, dict(PRESETS[preset])
    if device_type == "cuda":
        return GPU_DEFAULT_PRESET, {**PRESETS[GPU_DEFAULT_PRESET], **GPU_DEFAULT_OVERRIDES}
    return DEFAULT_PRESET, dict(PRESETS[DEFAULT_PRESET])


def preset_training(preset: str | None) -> dict:
    """Training option defaults of ``preset`` (the default preset when None)."""
    return dict(PRESET_TRAINING[preset or DEFAULT_PRESET])

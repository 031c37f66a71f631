"""The towers' shapes, importable without torch (commands check a model directory before loading it)."""

from __future__ import annotations

from dataclasses import dataclass

from specdifftree.errors import SDTError

N_STATS = 3  # per channel: asinh(mean), asinh(std), asinh(offset from the other channels in their spread)


@dataclass
class SensorLMConfig:
    """Shapes of the two towers. window: points per channel the sensor tower reads (longer series
    keep their last `window` points); channels: the most channels a window has; patch: points per
    token; group: channels per token (1: one token per channel and patch)."""

    window: int = 512
    channels: int = 3
    patch: int = 16
    group: int = 1
    width: int = 96
    layers: int = 2
    heads: int = 4
    ff: int = 192
    vocab: int = 1024
    text_len: int = 96
    text_width: int = 96
    text_layers: int = 2
    text_heads: int = 4
    text_ff: int = 192
    embed: int = 64
    init_scale: float = 10.0
    init_bias: float = -10.0

    def __post_init__(self) -> None:
        if self.window % self.patch or self.window < self.patch:
            raise SDTError(f"sensorlm: window ({self.window}) must be a positive multiple of patch ({self.patch})")
        if self.group < 1 or self.channels < 1:
            raise SDTError("sensorlm: channels and group must be >= 1")
        if self.width % self.heads or self.text_width % self.text_heads:
            raise SDTError("sensorlm: width must be a multiple of heads (both towers)")

    @property
    def groups(self) -> int:
        """Channel groups per window: ceil(channels / group)."""
        return -(-self.channels // self.group)

    @property
    def patches(self) -> int:
        return self.window // self.patch

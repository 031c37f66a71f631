"""Rewards `fn(text, context) -> float` for search, and forecast metrics for evaluation.

Import-light: numpy and scipy only.
"""

from specdifftree.rewards.base import RewardFn
from specdifftree.rewards.format import BoundsReward, FormatReward, LengthReward, SmoothnessReward
from specdifftree.rewards.metrics import crps, mae, mase, mse, smape
from specdifftree.rewards.plugins import REWARDS, CompositeReward, PluginReward, parse_reward, reward_spec
from specdifftree.rewards.spectral import SpectralReward, log_psd_l1, psd, spec_w1

__all__ = [
    "RewardFn", "parse_reward", "reward_spec", "REWARDS", "CompositeReward", "PluginReward",
    "SpectralReward", "FormatReward", "LengthReward", "SmoothnessReward", "BoundsReward",
    "psd", "log_psd_l1", "spec_w1", "mse", "mae", "mase", "smape", "crps",
]

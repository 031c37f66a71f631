"""SpecDiffTree: inference-time alignment of time-series language models.

Steer a prior p(x|c) towards pi*(x) ~ p(x|c) exp(lam r(x)) with Diffusion Tree Sampling over tokens.
"""

__version__ = "0.1.0"

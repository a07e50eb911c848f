"""nnunet-dicephi: the Dice loss's reduction sets Φ and smoothing ε as first-class nnU-Net options."""

__version__ = "0.2.0"

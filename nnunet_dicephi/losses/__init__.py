"""Dice-family losses for missing and empty labels: the general Φ/ε Dice loss and its relatives.

Pure functions take probabilities ``(B, C, *spatial)``; modules take nnU-Net's logits and label
maps. This package imports torch only.
"""

from . import lovasz, mime, modules, overlap, partial
from .lovasz import *  # noqa: F403 - each module's __all__ is the package's API
from .mime import *  # noqa: F403
from .modules import *  # noqa: F403
from .overlap import *  # noqa: F403
from .partial import *  # noqa: F403

__all__ = [*overlap.__all__, *lovasz.__all__, *mime.__all__, *partial.__all__, *modules.__all__]

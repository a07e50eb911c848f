"""Dice-family losses for missing and empty labels: the general Φ/ε Dice loss and its relatives.

Pure functions take probabilities ``(B, C, *spatial)``; modules take nnU-Net's logits and label
maps. This package imports torch only.
"""

from .lovasz import lovasz_softmax_loss
from .mime import mime_constants, mime_loss
from .modules import (
    CrossEntropyLoss,
    DiceCELoss,
    DiceLoss,
    ExclusionLoss,
    GeneralizedDiceLoss,
    JaccardLoss,
    LeafDiceLoss,
    LovaszSoftmaxLoss,
    MarginalDiceLoss,
    MimeLoss,
    SegmentationLoss,
    TverskyLoss,
    VNetDiceLoss,
)
from .overlap import (
    EPS_PER,
    LEAF_MEANS,
    WEIGHTINGS,
    MapSums,
    dice_from_sums,
    generalized_dice_loss,
    generalized_dice_weights,
    jaccard_loss,
    leaf_dice_loss,
    map_sums,
    soft_dice_loss,
    tversky_loss,
    vnet_dice_loss,
)
from .partial import (
    exclusion_loss,
    marginal_cross_entropy,
    marginal_dice_loss,
    marginalize_probs,
    masked_binary_cross_entropy,
)

__all__ = [
    "EPS_PER",
    "WEIGHTINGS",
    "LEAF_MEANS",
    "MapSums",
    "map_sums",
    "dice_from_sums",
    "soft_dice_loss",
    "vnet_dice_loss",
    "generalized_dice_loss",
    "generalized_dice_weights",
    "jaccard_loss",
    "tversky_loss",
    "leaf_dice_loss",
    "lovasz_softmax_loss",
    "mime_loss",
    "mime_constants",
    "marginalize_probs",
    "marginal_dice_loss",
    "marginal_cross_entropy",
    "masked_binary_cross_entropy",
    "exclusion_loss",
    "SegmentationLoss",
    "DiceLoss",
    "VNetDiceLoss",
    "LeafDiceLoss",
    "GeneralizedDiceLoss",
    "JaccardLoss",
    "TverskyLoss",
    "MimeLoss",
    "MarginalDiceLoss",
    "LovaszSoftmaxLoss",
    "ExclusionLoss",
    "CrossEntropyLoss",
    "DiceCELoss",
]

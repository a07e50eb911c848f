"""What nnU-Net's external-trainer lookup imports (folder on ``nnUNet_extTrainer``): re-exports only.

nnU-Net imports this file as a top-level module and later evicts it from ``sys.modules``; the
classes themselves live in ``nnunet_dicephi.trainers``, so they keep their canonical module and pickle.
The module-level ``__getattr__`` makes every valid parametric name visible to nnU-Net's ``hasattr``.
"""

from nnunet_dicephi.trainers import *  # noqa: F403 - the presets
from nnunet_dicephi.trainers import __getattr__  # noqa: F401 - parametric names; not copied by import *

"""Public datasets as downloaded → nnU-Net's raw format, with the papers' partial-labelling schemes.

One module per dataset: :mod:`~nnunet_dicephi.conversion.brats2018`,
:mod:`~nnunet_dicephi.conversion.acdc`, :mod:`~nnunet_dicephi.conversion.wmh2017`; grouped
cross-validation splits in :mod:`~nnunet_dicephi.conversion.splits`. On the command line:
``nnunet-dicephi convert {brats2018,acdc,wmh2017,install-splits} ...`` (also
``python -m nnunet_dicephi.conversion ...``).

Every converter checks the download's layout before writing anything and names every missing or
malformed file; keeps each image's geometry and checks that every channel and the label agree;
checks label values against the dataset's allowed set; writes ``dataset.json`` with nnU-Net's
``generate_dataset_json``; converts cases in parallel processes into a staging folder that is
renamed into ``$nnUNet_raw/Dataset<ID>_<Name>`` only when complete; refuses to replace an existing
dataset unless forced; and never writes outside ``nnUNet_raw``. Every failure is one
:class:`ConversionError` whose message lists every offender.

**Missing or empty: two views of one partially labelled dataset.** A scheme (``lgg-empty``,
``es-myo-empty``) replaces some labels by background. What that *means* is the experiment:

* ``view="missing"`` (default; CLI without ``--as-empty``): ``dataset.json`` carries the manifest
  (``"dicephi_partial_labels"``, see :mod:`nnunet_dicephi.partial_labels`) listing the labels still
  annotated in each changed case. This project's trainers then leave unannotated (case, class)
  pairs out of the loss and of validation — right for losses built for missing labels (marginal and
  leaf Dice, the ``_CE`` trainers) and for evaluating them.
* ``view="empty"`` (CLI ``--as-empty``): the same label files, no manifest in ``dataset.json``. The
  emptied maps are taken at face value, which is the MICCAI 2022 paper's experiment: Φ = I ignores
  them by its gradient alone, while Φ = BI (B > 1) and Φ = I with the heuristic ε learn to predict
  empty maps. Use this view for ``TrainerDiceI``, ``TrainerDiceBI`` and ``TrainerDiceIEps``.

Both views write the manifest as ``partial_labels.json`` beside ``dataset.json`` and the labels as
they were before the scheme in ``labelsTr_full/`` — the fully labelled reference for
``nnunet-dicephi report --reference .../labelsTr_full --all-pairs``. ``dicephi_conversion.json``
records each case's source files, patient and subset (HGG/LGG, ED/ES, site).

Only the standard library and numpy are imported with this package.
"""

from nnunet_dicephi.conversion._model import (
    FULL_LABELS_FOLDER,
    MANIFEST_FILE,
    RECORD_FILE,
    VIEWS,
    ConversionError,
    ConversionResult,
    View,
)
from nnunet_dicephi.conversion.acdc import convert_acdc
from nnunet_dicephi.conversion.brats2018 import convert_brats2018
from nnunet_dicephi.conversion.cli import add_parser, main
from nnunet_dicephi.conversion.splits import grouped_splits, install_splits
from nnunet_dicephi.conversion.wmh2017 import convert_wmh2017

__all__ = [
    "FULL_LABELS_FOLDER",
    "MANIFEST_FILE",
    "RECORD_FILE",
    "VIEWS",
    "ConversionError",
    "ConversionResult",
    "View",
    "add_parser",
    "convert_acdc",
    "convert_brats2018",
    "convert_wmh2017",
    "grouped_splits",
    "install_splits",
    "main",
]

"""Convert ACDC into nnU-Net's raw format with a patient-grouped split (same as ``nnunet-dicephi convert acdc``).

    python scripts/convert_acdc.py ACDC/database -d 270
    python scripts/convert_acdc.py ACDC/database -d 271 --scheme es-myo-empty --as-empty
    nnUNetv2_plan_and_preprocess -d 271 --verify_dataset_integrity
    python -m nnunet_dicephi.conversion install-splits 271     # = nnunet-dicephi convert install-splits 271

``--help`` lists every option; the package docs are in ``nnunet_dicephi.conversion``.
"""

import sys

from nnunet_dicephi.conversion.cli import main

if __name__ == "__main__":
    sys.exit(main(["acdc", *sys.argv[1:]]))

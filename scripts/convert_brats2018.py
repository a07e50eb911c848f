"""Convert the BraTS 2018 training data into nnU-Net's raw format (same as ``nnunet-dicephi convert brats2018``).

    python scripts/convert_brats2018.py MICCAI_BraTS_2018_Data_Training -d 180
    python scripts/convert_brats2018.py MICCAI_BraTS_2018_Data_Training -d 181 --scheme lgg-empty --as-empty

``--help`` lists every option; the package docs are in ``nnunet_dicephi.conversion``.
"""

import sys

from nnunet_dicephi.conversion.cli import main

if __name__ == "__main__":
    sys.exit(main(["brats2018", *sys.argv[1:]]))

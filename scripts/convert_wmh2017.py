"""Convert the WMH 2017 training data into nnU-Net's raw format (same as ``nnunet-dicephi convert wmh2017``).

    python scripts/convert_wmh2017.py WMH/training -d 170

``--help`` lists every option; the package docs are in ``nnunet_dicephi.conversion``.
"""

import sys

from nnunet_dicephi.conversion.cli import main

if __name__ == "__main__":
    sys.exit(main(["wmh2017", *sys.argv[1:]]))

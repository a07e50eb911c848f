"""``python -m nnunet_dicephi.conversion``: the same as ``nnunet-dicephi convert``."""

import sys

from nnunet_dicephi.conversion.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m nnunet_dicephi.conversion"))

"""Write plans variants by name: ``python -m nnunet_dicephi.cluster.write_variants FOLDER NAME…``.

The command a grid's preprocessing job runs after ``nnUNetv2_plan_and_preprocess``
(:func:`.variants.variants_command`). It lives apart from :mod:`.variants` because importing
:mod:`nnunet_dicephi.cluster` imports that module, and ``python -m`` of a module that its own
package has imported runs it a second time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .variants import __doc__ as _variants_doc
from .variants import write_variants


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnunet_dicephi.cluster.write_variants", description=_variants_doc)
    parser.add_argument("folder", help="the dataset's folder in nnUNet_preprocessed")
    parser.add_argument("--plans", default="nnUNetPlans", help="plans identifier to copy (default: nnUNetPlans)")
    parser.add_argument("variants", nargs="+", metavar="NAME", help="variant names, e.g. nnUNetPlans_f16_bs4")
    args = parser.parse_args(argv)
    try:
        for path in write_variants(args.folder, args.plans, args.variants):
            print(f"wrote {path}")
    except ValueError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m nnunet_dicephi.cluster.write_variants FOLDER NAME…``: :func:`.variants.main`, the grid's command.

It lives apart from :mod:`.variants` because importing :mod:`nnunet_dicephi.cluster` imports that module,
and ``python -m`` of a module that its own package has imported runs it a second time.
"""

import sys

from nnunet_dicephi.cluster.variants import main

if __name__ == "__main__":
    sys.exit(main())

"""Print one of the README's two fresh-machine commands: ``main`` (the first) or ``test`` (the second).

The commands are the non-comment lines of the README's first ```bash block; there must be exactly two.
"""

import pathlib
import re
import sys

readme = pathlib.Path(__file__).resolve().parent.parent / "README.md"
block = re.search(r"```bash\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
if block is None:
    sys.exit("README.md has no ```bash block at the top")
commands = [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]
if len(commands) != 2:
    sys.exit(f"README.md's first ```bash block must hold exactly two commands; found {len(commands)}")
which = sys.argv[1] if len(sys.argv) > 1 else "test"
print(commands[{"main": 0, "test": 1}[which]])

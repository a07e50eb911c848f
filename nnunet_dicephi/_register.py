"""Start-up hook: make nnU-Net's stock commands find this project's trainers.

Run at interpreter start by ``nnunet_dicephi_trainers.pth`` in site-packages. It only appends this
project's trainer folder to ``nnUNet_extTrainer`` (keeping the user's own entries first) and imports
nothing else. Set ``NNUNET_DICEPHI_NO_REGISTER=1`` to switch it off. nnU-Net reads the variable from
2.8.0 on; for 2.6 and 2.7, ``nnunet-dicephi register`` places the trainers in nnU-Net's own trainer
package instead (:mod:`nnunet_dicephi.registration`).
"""

import os

VARIABLE = "nnUNet_extTrainer"
SWITCH = "NNUNET_DICEPHI_NO_REGISTER"


def lookup_folder() -> str | None:
    """The folder holding ``dicephi_trainers.py``: inside the installed package, or the checkout's ``trainers/``."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "_nnunet_lookup"), os.path.join(os.path.dirname(here), "trainers")):
        if os.path.isfile(os.path.join(candidate, "dicephi_trainers.py")):
            return candidate
    return None


def register() -> None:
    if os.environ.get(SWITCH, "").strip() not in ("", "0"):
        return
    folder = lookup_folder()
    if folder is None:
        return
    entries = [entry for entry in os.environ.get(VARIABLE, "").split(os.pathsep) if entry]
    if folder not in entries:
        os.environ[VARIABLE] = os.pathsep.join([*entries, folder])


try:
    register()
except Exception:  # never break interpreter start-up
    pass

"""``nnUNetv2_train`` that halts at the start of one epoch until it is killed.

A kill-and-resume test kills it there: the training cannot finish first, however fast the machine.
Usage: ``python -m tests.e2e.train_until EPOCH MARKER <nnUNetv2_train's arguments>``; MARKER is
written once the epoch is reached (the checkpoint of the epoch before is then on disk).
"""

import sys
import threading

from nnunetv2.run.run_training import run_training_entry

from nnunet_dicephi.trainers.base import DicePhiTrainer


def main() -> None:
    epoch, marker = int(sys.argv[1]), sys.argv[2]
    original = DicePhiTrainer.on_epoch_start

    def on_epoch_start(self):
        if self.current_epoch == epoch:
            with open(marker, "w") as handle:
                handle.write(str(epoch))
            threading.Event().wait()  # until killed
        original(self)

    DicePhiTrainer.on_epoch_start = on_epoch_start
    sys.argv = ["nnUNetv2_train", *sys.argv[3:]]
    run_training_entry()


if __name__ == "__main__":
    main()

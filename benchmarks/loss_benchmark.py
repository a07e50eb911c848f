"""Forward+backward time and peak memory of the losses against their references, as ratios.

    python benchmarks/loss_benchmark.py              # CPU 2×4×64³; CUDA 2×4×128³ too if there is a GPU
    python benchmarks/loss_benchmark.py --quick      # CPU 2×4×32³ (CUDA 2×4×64³), fewer pairs
    python benchmarks/loss_benchmark.py --no-compile # eager rows only (compiling takes minutes on a CPU)

Rows: this project's Dice+CE against nnU-Net's ``DC_and_CE_loss`` (``MemoryEfficientSoftDiceLoss``)
at the same setting, eager and compiled the way each trainer compiles (this project: every level
module whole; nnU-Net: ``loss.dc``); compiled against eager; the partial-label path (Dice + marginal
CE with an ``annotated`` mask) against Dice + CE; Lovász-Softmax against SMP's ``LovaszLoss``
(Berman's algorithm, 2-D only, so both run on the volume reshaped to B×C×H×(W·D)); other variants
against Dice Φ = I, for scale.

Time: both sides of a row run in turns in one process (A B B A …) and the row shows the median of the
pairwise ratios with their quartiles, so load that drifts during the run hits both sides alike. Peak
memory: ``torch.cuda.max_memory_allocated`` growth over one step on CUDA; on the CPU (Linux) the growth
of the peak resident set during one step, each side in a fresh process (glibc told to return every
large block, so the resident set follows live memory); not measured for compiled rows on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass

COMPILE_NOTE = "compiled as its trainer compiles it"


@dataclass(frozen=True)
class Side:
    loss: str
    compiled: bool = False

    @property
    def key(self) -> str:
        return f"{self.loss}{'+compiled' if self.compiled else ''}"


@dataclass(frozen=True)
class Row:
    a: Side
    b: Side
    description: str
    time_target: float | None = None
    memory_target: float | None = None


def rows(compile_rows: bool) -> list[Row]:
    table = [
        Row(Side("dicece_I"), Side("nnunet_dicece_I"), "Dice+CE Φ=I vs nnU-Net (batch_dice=False)", 1.0, 1.0),
        Row(Side("dicece_BI"), Side("nnunet_dicece_BI"), "Dice+CE Φ=BI vs nnU-Net (batch_dice=True)", 1.0, 1.0),
        Row(Side("dicece_BI_ignore"), Side("nnunet_dicece_BI_ignore"), "Dice+CE Φ=BI + ignore label vs nnU-Net", 1, 1),
    ]
    if compile_rows:
        table += [
            Row(Side("dicece_I", True), Side("nnunet_dicece_I", True), "compiled: Dice+CE Φ=I vs nnU-Net", 1.0, 1.0),
            Row(Side("dicece_BI", True), Side("nnunet_dicece_BI", True), "compiled: Dice+CE Φ=BI vs nnU-Net", 1.0, 1.0),
            Row(Side("dicece_BI", True), Side("dicece_BI"), "Dice+CE Φ=BI compiled vs eager"),
            Row(
                Side("dicece_I_partial", True),
                Side("dicece_I", True),
                "compiled: Dice + marginal CE with annotated vs Dice+CE",
                1.25,
                1.10,
            ),
        ]
    table += [
        Row(Side("dicece_I_partial"), Side("dicece_I"), "Dice + marginal CE with annotated vs Dice+CE", 1.25, 1.10),
        Row(Side("lovasz_2d"), Side("smp_lovasz_2d"), "Lovász-Softmax per image vs SMP LovaszLoss", 1.0, None),
        Row(Side("dice_CI"), Side("dice_I"), "Dice Φ=CI vs Dice Φ=I"),
        Row(Side("dice_BCI"), Side("dice_I"), "Dice Φ=BCI vs Dice Φ=I"),
        Row(Side("gdl"), Side("dice_I"), "Generalized Dice (Φ=CI) vs Dice Φ=I"),
        Row(Side("mime"), Side("dice_I"), "Mime vs Dice Φ=I"),
    ]
    return table


def build(name: str, classes: int):
    import torch

    from nnunet_dicephi import losses as L

    if name.startswith("nnunet_"):
        from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

        return DC_and_CE_loss(
            {"batch_dice": "_BI" in name, "smooth": 1e-5, "do_bg": False, "ddp": False},
            {},
            weight_ce=1,
            weight_dice=1,
            ignore_label=classes if name.endswith("ignore") else None,
            dice_class=MemoryEfficientSoftDiceLoss,
        )
    if name == "smp_lovasz_2d":
        import warnings

        with warnings.catch_warnings():  # its import warns about torch.jit.interface
            warnings.simplefilter("ignore")
            from segmentation_models_pytorch.losses import LovaszLoss

        return LovaszLoss(mode="multiclass", per_image=True)
    table = {
        "dicece_I": lambda: L.DiceCELoss(L.DiceLoss(phi="I", eps_nr=1e-5)),
        "dicece_I_partial": lambda: L.DiceCELoss(L.DiceLoss(phi="I", eps_nr=1e-5)),
        "dicece_BI": lambda: L.DiceCELoss(L.DiceLoss(phi="BI", eps_nr=1e-5)),
        "dicece_BI_ignore": lambda: L.DiceCELoss(L.DiceLoss(phi="BI", eps_nr=1e-5, ignore_label=classes)),
        "dice_I": lambda: L.DiceLoss(phi="I"),
        "dice_CI": lambda: L.DiceLoss(phi="CI"),
        "dice_BCI": lambda: L.DiceLoss(phi="BCI"),
        "gdl": lambda: L.GeneralizedDiceLoss(phi="CI"),
        # Berman's and SMP's defaults: background counted, classes present in the image
        "lovasz_2d": lambda: L.LovaszSoftmaxLoss(per_image=True, include_background=True),
        "mime": lambda: L.MimeLoss(a=torch.full((classes,), 1e-3), b=torch.full((classes,), 1e-5)),
    }
    return table[name]()


def compiled(loss, side: Side):
    import torch

    if not side.compiled:
        return loss
    if side.loss.startswith("nnunet_"):
        loss.dc = torch.compile(loss.dc)  # what nnUNetTrainer._build_loss does
        return loss
    return torch.compile(loss)


def make_step(side: Side, device: str, shape: list[int]):
    """A zero-argument forward+backward of ``side`` on a fixed random batch."""
    import torch

    generator = torch.Generator().manual_seed(0)
    batch, classes, *spatial = shape
    if side.loss.endswith("_2d"):  # SMP's Lovász takes B×C×H×W only
        spatial = [spatial[0], int(torch.tensor(spatial[1:]).prod())]
    dev = torch.device(device)
    loss_fn = compiled(build(side.loss, classes).to(dev), side)
    logits = torch.randn(batch, classes, *spatial, generator=generator).to(dev).requires_grad_()
    ignore = side.loss.endswith("ignore")
    target = torch.randint(0, classes + int(ignore), (batch, 1, *spatial), generator=generator)
    extra = ()
    if side.loss.endswith("partial"):
        # the last class is not annotated in image 0: its voxels there are labelled background
        annotated = torch.ones(batch, classes, dtype=torch.bool)
        annotated[0, -1] = False
        target[0][target[0] == classes - 1] = 0
        extra = (annotated.to(dev),)
    target = target.to(dev, torch.int16)
    if side.loss == "smp_lovasz_2d":
        target = target[:, 0].long()

    def step():
        logits.grad = None
        loss_fn(logits, target, *extra).backward()

    return step


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def cpu_peak_child(loss: str, shape: list[int]) -> int:
    """Run in a fresh process: growth of the peak resident set during one step.

    The peak (VmHWM) is reset just before the step (``/proc/self/clear_refs``): ``ru_maxrss`` would
    keep the high-water mark of the parent, inherited through fork.
    """
    step = make_step(Side(loss), "cpu", [1, shape[1], *[4] * (len(shape) - 2)])
    step()  # thread pools and kernels on a tiny problem, so they do not count as loss memory
    step = make_step(Side(loss), "cpu", shape)
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")
    base = _status_kib("VmRSS")
    step()
    return (_status_kib("VmHWM") - base) * 1024


def cpu_peak(loss: str, shape: list[int]) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--memory-child", loss, "--shape", *map(str, shape)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement of {loss} failed:\n{out.stderr}")
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def available(side: Side) -> str | None:
    """None, or why this side cannot run here."""
    if side.loss.startswith("smp_"):
        try:
            import warnings

            with warnings.catch_warnings():  # its import warns about torch.jit.interface
                warnings.simplefilter("ignore")
                import segmentation_models_pytorch  # noqa: F401
        except ImportError:
            return "segmentation-models-pytorch is not installed (pip install -e '.[test]' or '.[bench]')"
    return None


def verdict(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return "ok" if value <= target else f"over {target:.2f}×"


def report(device: str, shape: list[int], pairs: int, compile_rows: bool, only: str | None = None) -> None:
    import torch

    from nnunet_dicephi.benchmarking import cuda_peak_bytes, paired_timing

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    print(f"\n## {device}: logits {'×'.join(map(str, shape))}, {pairs} pairs of forward+backward passes\n")
    print("| comparison | time a / b, ms | time ratio (quartiles) | target | peak MiB a / b | memory ratio | target |")
    print("|---|---|---|---|---|---|---|")
    memory: dict[str, int | None] = {}
    for row in rows(compile_rows):
        if only and only.lower() not in row.description.lower():
            continue
        missing = available(row.a) or available(row.b)
        if missing:
            print(f"| {row.description} | not run: {missing} | | | | | |")
            continue
        step_a, step_b = make_step(row.a, device, shape), make_step(row.b, device, shape)
        for step in (step_a, step_b, step_a, step_b):  # warm-up; compiles the compiled sides
            step()
        timing = paired_timing(step_a, step_b, pairs, sync)
        for side, step in ((row.a, step_a), (row.b, step_b)):
            if side.key not in memory:
                if device == "cuda":
                    memory[side.key] = cuda_peak_bytes(step)
                else:
                    memory[side.key] = None if side.compiled else cpu_peak(side.loss, shape)
        mem_a, mem_b = memory[row.a.key], memory[row.b.key]
        ms = f"{sorted(timing.a)[pairs // 2] * 1e3:.1f} / {sorted(timing.b)[pairs // 2] * 1e3:.1f}"
        if mem_a is None or mem_b is None:
            mem, mem_ratio, mem_verdict = "–", "–", ""
        else:
            ratio = mem_a / max(mem_b, 1)
            mem, mem_ratio = f"{mem_a / 2**20:.1f} / {mem_b / 2**20:.1f}", f"{ratio:.2f}×"
            mem_verdict = verdict(ratio, row.memory_target)
        print(
            f"| {row.description} | {ms} | {timing.describe()} | {verdict(timing.ratio, row.time_target)} | "
            f"{mem} | {mem_ratio} | {mem_verdict} |"
        )
    print("\n(a / b: this project / reference; below 1 means this project is faster or smaller)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller volumes and fewer pairs (a smoke run)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled rows")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--only", help="run only the rows whose description contains this text")
    parser.add_argument("--pairs", type=int, help="pairs of passes per row (default 11 on CPU, 31 on CUDA)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(cpu_peak_child(args.memory_child, args.shape)))
        return

    import torch

    if args.device in ("all", "cpu"):
        shape = [2, 4, 32, 32, 32] if args.quick else [2, 4, 64, 64, 64]
        report("cpu", shape, args.pairs or (5 if args.quick else 11), not args.no_compile, args.only)
    if args.device in ("all", "cuda"):
        if torch.cuda.is_available():
            shape = [2, 4, 64, 64, 64] if args.quick else [2, 4, 128, 128, 128]
            report("cuda", shape, args.pairs or (11 if args.quick else 31), not args.no_compile, args.only)
        else:
            print("\nNo CUDA device: the GPU rows (2×4×128³) were not run.")


if __name__ == "__main__":
    main()

"""Forward+backward time and peak memory of the losses, side by side, as ratios.

    python benchmarks/loss_benchmark.py              # CPU 2×4×64³, and CUDA 2×4×128³ if available
    python benchmarks/loss_benchmark.py --quick      # smaller volumes, fewer repeats

Part 1 compares this project's Dice+CE with nnU-Net's ``DC_and_CE_loss`` (``MemoryEfficientSoftDiceLoss``)
at the same configuration; part 2 compares variants with this project's plain Dice (Φ = I).

Every measurement runs in a fresh subprocess. Peak memory is the growth of the peak resident set
during one forward+backward on CPU (glibc told to return every large block to the system, so the
resident set follows live memory), and ``torch.cuda.max_memory_allocated`` growth on CUDA. Time is the
median of repeated forward+backward passes after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# (name, reference, description): what is measured against what
COMPARISONS = [
    ("dicece_I", "nnunet_dicece_I", "Dice+CE, Φ=I (batch_dice=False), ε=1e-5, no background"),
    ("dicece_BI", "nnunet_dicece_BI", "Dice+CE, Φ=BI (batch_dice=True), ε=1e-5, no background"),
    ("dicece_BI_ignore", "nnunet_dicece_BI_ignore", "Dice+CE, Φ=BI, with an ignore label"),
    ("dice_CI", "dice_I", "Dice Φ=CI vs Dice Φ=I"),
    ("dice_BCI", "dice_I", "Dice Φ=BCI vs Dice Φ=I"),
    ("gdl", "dice_I", "Generalized Dice (Φ=CI) vs Dice Φ=I"),
    ("lovasz", "dice_I", "Lovász-Softmax (per image) vs Dice Φ=I"),
    ("mime", "dice_I", "Mime vs Dice Φ=I"),
    ("dicece_I_partial", "dicece_I", "Dice+marginal CE with a partial-label mask vs Dice+CE"),
]


def build(name: str, classes: int):
    import torch

    from nnunet_dicephi import losses as L

    if name.startswith("nnunet_"):
        from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

        batch_dice = "_BI" in name
        return DC_and_CE_loss(
            {"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False},
            {},
            weight_ce=1,
            weight_dice=1,
            ignore_label=classes if name.endswith("ignore") else None,
            dice_class=MemoryEfficientSoftDiceLoss,
        )
    table = {
        "dicece_I": lambda: L.DiceCELoss(L.DiceLoss(phi="I", eps_nr=1e-5)),
        "dicece_I_partial": lambda: L.DiceCELoss(L.DiceLoss(phi="I", eps_nr=1e-5)),
        "dicece_BI": lambda: L.DiceCELoss(L.DiceLoss(phi="BI", eps_nr=1e-5)),
        "dicece_BI_ignore": lambda: L.DiceCELoss(L.DiceLoss(phi="BI", eps_nr=1e-5, ignore_label=classes)),
        "dice_I": lambda: L.DiceLoss(phi="I"),
        "dice_CI": lambda: L.DiceLoss(phi="CI"),
        "dice_BCI": lambda: L.DiceLoss(phi="BCI"),
        "gdl": lambda: L.GeneralizedDiceLoss(phi="CI"),
        "lovasz": lambda: L.LovaszSoftmaxLoss(),
        "mime": lambda: L.MimeLoss(a=torch.full((classes,), 1e-3), b=torch.full((classes,), 1e-5)),
    }
    return table[name]()


def child(name: str, device: str, shape: list[int], repeats: int) -> dict:
    import resource

    import torch

    torch.manual_seed(0)
    batch, classes, *spatial = shape
    dev = torch.device(device)
    loss_fn = build(name, classes).to(dev)
    logits = torch.randn(batch, classes, *spatial, device=dev, requires_grad=True)
    with_ignore = name.endswith("ignore")
    target = torch.randint(0, classes + int(with_ignore), (batch, 1, *spatial), device=dev, dtype=torch.int16)
    extra = ()
    if name.endswith("partial"):
        annotated = torch.ones(batch, classes, dtype=torch.bool, device=dev)
        annotated[0, -1] = False
        target = torch.where(
            (target == classes - 1) & (torch.arange(batch, device=dev) == 0).view(-1, 1, 1, 1, 1), 0, target
        ).to(torch.int16)
        extra = (annotated,)

    def step():
        logits.grad = None
        loss_fn(logits, target, *extra).backward()

    # warm up thread pools and kernels on a tiny problem so they do not count as loss memory
    small = torch.randn(1, classes, *[4] * len(spatial), device=dev, requires_grad=True)
    build(name, classes).to(dev)(
        small, torch.zeros(1, 1, *[4] * len(spatial), device=dev, dtype=torch.int16)
    ).backward()

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024

    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"time_s": statistics.median(times), "peak_bytes": peak}


def measure(name: str, device: str, shape: list[int], repeats: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--child", name, "--device", device, "--repeats", str(repeats), "--shape"]
    out = subprocess.run(cmd + [str(s) for s in shape], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark of {name} on {device} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(device: str, shape: list[int], repeats: int) -> None:
    print(f"\n## {device}: logits {'×'.join(map(str, shape))}, median of {repeats} forward+backward passes\n")
    header = f"| {'comparison':<60} | {'time ms':>17} | {'time ratio':>10} | {'peak MiB':>17} | {'mem ratio':>9} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    cache: dict[str, dict] = {}
    for name, ref, description in COMPARISONS:
        for key in (name, ref):
            if key not in cache:
                cache[key] = measure(key, device, shape, repeats)
        a, b = cache[name], cache[ref]
        times = f"{a['time_s'] * 1e3:7.1f} / {b['time_s'] * 1e3:7.1f}"
        mem = f"{a['peak_bytes'] / 2**20:7.1f} / {b['peak_bytes'] / 2**20:7.1f}"
        time_ratio = a["time_s"] / b["time_s"]
        mem_ratio = a["peak_bytes"] / max(b["peak_bytes"], 1)
        print(f"| {description:<60} | {times:>17} | {time_ratio:>9.2f}× | {mem:>17} | {mem_ratio:>8.2f}× |")
    print("\n(time and memory as this / reference; ratio below 1 means this project is faster or smaller)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small volumes and few repeats (a smoke run)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.device, args.shape, args.repeats)))
        return

    import torch

    cpu_shape = [2, 4, 32, 32, 32] if args.quick else [2, 4, 64, 64, 64]
    report("cpu", cpu_shape, 2 if args.quick else 7)
    if torch.cuda.is_available():
        report("cuda", [2, 4, 64, 64, 64] if args.quick else [2, 4, 128, 128, 128], 3 if args.quick else 20)
    else:
        print("\nNo CUDA device: the GPU comparison (2×4×128³) was not run.")


if __name__ == "__main__":
    main()

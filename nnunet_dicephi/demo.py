"""``nnunet-dicephi demo``: what Φ and ε do with missing labels, on a toy dataset, through stock nnU-Net.

The toy imitates the BRATS experiment of the MICCAI 2022 paper. Every image holds one lesion of one
of two types that look different: type A is uniformly bright, type B is bright with dark stripes.
One training image in three holds type B, and its label is replaced by an empty map (the labelled
type is the majority, as HGG is in BraTS; when the types are balanced, ε = E Σy makes "segment
nothing" exactly as cheap as "segment both types" and training can fall into empty maps for both);
the test set is balanced and fully labelled. Three trainers learn from the same data:

* ``TrainerDiceI`` (Φ = I, ε ≈ 0): an empty map gives almost no gradient, so the missing type-B
  labels are ignored and type B is segmented anyway, like type A;
* ``TrainerDiceBI`` (Φ = BI, B ≥ 2) and ``TrainerDiceIEps`` (Φ = I, ε = expected labelled volume):
  empty maps are learned, so type B is left out while type A is kept.

Everything runs through nnU-Net's own commands (planning, preprocessing, training, prediction);
only the plans are shrunk so that the whole demo fits in minutes on a laptop CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_dicephi._files import replace_folder, staging_folder, write_text_atomically

DATASET_ID = 987
DATASET_NAME = f"Dataset{DATASET_ID}_DicePhiDemo"
TYPES = ("A", "B")


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: the default reproduces the paper's behaviours; tests use a tiny one."""

    train_cases: int = 48
    test_cases: int = 24
    image: int = 48
    epochs: int = 16
    iterations: int = 40
    batch_size: int = 4
    validation_cases: int = 4
    unlabelled_every: int = 3
    """Every n-th training image holds a type-B lesion, the others type A."""


SMOKE = DemoSize(train_cases=8, test_cases=4, image=32, epochs=1, iterations=2, batch_size=2, validation_cases=2)


@dataclass(frozen=True)
class Expectation:
    trainer: str
    label: str
    says: str
    unlabelled_segmented: bool

    def holds(self, dsc: dict[str, float]) -> bool:
        b_ok = dsc["B"] >= 0.8 if self.unlabelled_segmented else dsc["B"] <= 0.2
        return dsc["A"] >= 0.8 and b_ok


EXPECTATIONS = (
    Expectation("TrainerDiceI", "Φ=I, ε≈0", "ignores missing labels: segments B (DSC B ≥ 0.8)", True),
    Expectation("TrainerDiceBI", "Φ=BI, ε≈0", "learns empty maps: leaves B out (DSC B ≤ 0.2)", False),
    Expectation("TrainerDiceIEps", "Φ=I, ε=E Σy", "learns empty maps: leaves B out (DSC B ≤ 0.2)", False),
)


# --- data -------------------------------------------------------------------------------------


def lesion_case(rng: np.random.Generator, kind: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``(1, size, size)`` image with one round lesion of type A (uniform) or B (striped)."""
    image = rng.normal(0.0, 0.35, (1, size, size)).astype(np.float32)
    _, y, x = np.indices(image.shape)
    radius = rng.uniform(size / 10, size / 6)
    cy, cx = rng.uniform(radius + 2, size - radius - 2, 2)
    lesion = (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
    image[lesion] += 1.6
    if kind == "B":
        image[lesion & ((x // 2) % 2 == 0)] -= 1.2  # stripes: every other pair of columns darker
    return image, lesion.astype(np.uint8)


def write_dataset(raw_root: Path, size: DemoSize, seed: int) -> Path:
    """The toy dataset in nnU-Net's raw format; type-B labels emptied in training. Written atomically."""
    import SimpleITK as sitk
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    rng = np.random.default_rng(seed)
    final = raw_root / DATASET_NAME
    raw_root.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(final)
    types: dict[str, dict[str, str]] = {"train": {}, "test": {}}
    for split, folder, count in (("train", "Tr", size.train_cases), ("test", "Ts", size.test_cases)):
        (staging / f"images{folder}").mkdir()
        (staging / f"labels{folder}").mkdir()
        for i in range(count):
            every = size.unlabelled_every if split == "train" else 2  # the test set is balanced
            kind = "B" if i % every == every - 1 else "A"
            image, label = lesion_case(rng, kind, size.image)
            if split == "train" and kind == "B":
                label[:] = 0  # the lesion is there, its label is an empty map
            case = f"toy_{split}_{i:03d}"
            types[split][case] = kind
            for array, path in (
                (image, f"images{folder}/{case}_0000.nii.gz"),
                (label, f"labels{folder}/{case}.nii.gz"),
            ):
                volume = sitk.GetImageFromArray(array)
                volume.SetSpacing((1.0, 1.0, 1.0))
                sitk.WriteImage(volume, str(staging / path))
    generate_dataset_json(
        str(staging),
        {0: "MR"},
        {"background": 0, "lesion": 1},
        size.train_cases,
        ".nii.gz",
        dataset_name=DATASET_NAME,
        description="nnunet-dicephi demo: lesion types A and B; B's labels are empty maps in training",
    )
    (staging / "lesion_types.json").write_text(json.dumps(types, indent=2))
    replace_folder(staging, final)
    return final


def shrink_plans(plans_file: Path, size: DemoSize) -> None:
    """A CPU-sized 2d U-Net (4 stages, 16–128 features), the demo's patch and batch size."""
    plans = json.loads(plans_file.read_text())
    config = plans["configurations"]["2d"]
    config["patch_size"] = [size.image, size.image]
    config["batch_size"] = size.batch_size
    stages = 4
    config["architecture"]["arch_kwargs"].update(
        n_stages=stages,
        features_per_stage=[16 * 2**s for s in range(stages)],
        kernel_sizes=[[3, 3]] * stages,
        strides=[[1, 1]] + [[2, 2]] * (stages - 1),
        n_conv_per_stage=[2] * stages,
        n_conv_per_stage_decoder=[2] * (stages - 1),
    )
    plans["configurations"] = {"2d": config}
    write_text_atomically(plans_file, json.dumps(plans, indent=2))


# --- evaluation -------------------------------------------------------------------------------


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """DSC; 1 when both are empty (nnU-Net's evaluator gives NaN there)."""
    total = int(prediction.sum() + reference.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(prediction, reference).sum()) / total


def evaluate(prediction_dir: Path, raw_dir: Path) -> dict[str, dict[str, float]]:
    """Mean DSC and mean volume difference (prediction − reference, ml) per lesion type."""
    import SimpleITK as sitk

    types = json.loads((raw_dir / "lesion_types.json").read_text())["test"]
    scores: dict[str, dict[str, list[float]]] = {t: {"dsc": [], "dv": []} for t in TYPES}
    for case, kind in types.items():
        reference_image = sitk.ReadImage(str(raw_dir / "labelsTs" / f"{case}.nii.gz"))
        reference = sitk.GetArrayFromImage(reference_image) > 0
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction_dir / f"{case}.nii.gz"))) > 0
        ml = float(np.prod(reference_image.GetSpacing())) / 1000.0
        scores[kind]["dsc"].append(dice(prediction, reference))
        scores[kind]["dv"].append((int(prediction.sum()) - int(reference.sum())) * ml)
    return {
        kind: {"dsc": float(np.mean(v["dsc"])), "dv_ml": float(np.mean(v["dv"])), "cases": len(v["dsc"])}
        for kind, v in scores.items()
    }


def results_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Table 1 of the paper, for the toy: DSC and ΔV per lesion type, with the expected behaviour."""
    lines = [
        "| trainer | Φ, ε | DSC A (labelled) | ΔV A (ml) | DSC B (unlabelled) | ΔV B (ml) | expected | as expected |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for expectation in EXPECTATIONS:
        scores = results.get(expectation.trainer)
        if scores is None:
            continue
        dsc = {t: scores[t]["dsc"] for t in TYPES}
        lines.append(
            f"| {expectation.trainer} | {expectation.label} | {dsc['A']:.2f} | {scores['A']['dv_ml']:+.3f} "
            f"| {dsc['B']:.2f} | {scores['B']['dv_ml']:+.3f} | {expectation.says} "
            f"| {'yes' if expectation.holds(dsc) else 'NO'} |"
        )
    return "\n".join(lines)


def plot_results(results: dict, raw_dir: Path, prediction_dirs: dict[str, Path], out: Path) -> list[Path]:
    """Two figures: DSC per type and trainer; one test image of each type with every prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    written = []
    trainers = [e.trainer for e in EXPECTATIONS if e.trainer in results]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.38
    for i, kind in enumerate(TYPES):
        values = [results[t][kind]["dsc"] for t in trainers]
        ax.bar(np.arange(len(trainers)) + (i - 0.5) * width, values, width, label=f"type {kind}")
    ax.set_xticks(np.arange(len(trainers)), trainers)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test DSC")
    ax.axhline(0.8, color="grey", lw=0.6, ls="--")
    ax.axhline(0.2, color="grey", lw=0.6, ls="--")
    ax.legend(title="lesion type (B unlabelled in training)", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    written.append(out / "dsc_per_type.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    types = json.loads((raw_dir / "lesion_types.json").read_text())["test"]
    examples = {kind: next(c for c, k in types.items() if k == kind) for kind in TYPES}
    fig, axes = plt.subplots(len(TYPES), 1 + len(trainers), figsize=(2.2 * (1 + len(trainers)), 4.6))
    for row, (kind, case) in enumerate(examples.items()):
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(raw_dir / "imagesTs" / f"{case}_0000.nii.gz")))[0]
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(raw_dir / "labelsTs" / f"{case}.nii.gz")))[0]
        panels = [("reference", reference)] + [
            (t, sitk.GetArrayFromImage(sitk.ReadImage(str(prediction_dirs[t] / f"{case}.nii.gz")))[0]) for t in trainers
        ]
        for col, (title, mask) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray")
            ax.contour(mask > 0, levels=[0.5], colors="r", linewidths=1.0)
            ax.set_title(f"{title}\n(type {kind})" if col == 0 else title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    written.append(out / "examples.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


# --- running nnU-Net --------------------------------------------------------------------------


def _command(name: str) -> str:
    """An nnU-Net console script: beside this interpreter (virtual environments), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install nnunetv2 in this environment (pip install nnunetv2)")
    return found


class Runner:
    """Runs nnU-Net commands with the demo's folders, logging each to a file, with progress bars."""

    def __init__(self, out: Path, device: str, quiet: bool = False) -> None:
        self.out = out
        self.device = device
        self.quiet = quiet
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = dict(
            os.environ,
            nnUNet_raw=str(out / "nnUNet_raw"),
            nnUNet_preprocessed=str(out / "nnUNet_preprocessed"),
            nnUNet_results=str(out / "nnUNet_results"),
            nnUNet_n_proc_DA=os.environ.get("nnUNet_n_proc_DA", "2"),
        )

    def run(self, log: str, args: list[str], progress: str | None = None, total: int = 0, marker: str = "") -> None:
        """Run ``args``; with ``marker``, advance a bar by one for each log line starting with it."""
        from tqdm import tqdm

        path = self.logs / f"{log}.log"
        with open(path, "w", encoding="utf-8") as handle:
            process = subprocess.Popen(args, env=self.env, stdout=handle, stderr=subprocess.STDOUT)
            with tqdm(total=total or None, desc=progress or log, unit="", disable=self.quiet, leave=True) as bar:
                while process.poll() is None:
                    time.sleep(0.5)
                    if marker:
                        bar.update(_count_marker(path, marker) - bar.n)
                if marker:
                    bar.update(_count_marker(path, marker) - bar.n)
        if process.returncode != 0:
            tail = "".join(path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-25:])
            raise RuntimeError(f"{' '.join(args[:2])} … failed (exit {process.returncode}); log {path}:\n{tail}")


def _count_marker(path: Path, marker: str) -> int:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return sum(marker in line for line in text.splitlines())


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def trainer_name(base: str, size: DemoSize) -> str:
    # nnU-Net's 1e-2 instead of the Dice-only presets' 1e-3: the demo's few hundred iterations are too
    # few at 1e-3 for Φ=BI and the heuristic ε to learn empty maps; with the labelled type in the
    # majority the heuristic ε did not collapse at 1e-2 (README, "When the heuristic ε learns nothing")
    return f"{base}_ep{size.epochs}_it{size.iterations}_lr1e-2"


def run_demo(out: Path, size: DemoSize = DemoSize(), seed: int = 0, device: str | None = None, quiet: bool = False):
    """The whole demo; returns ``(results, table, report_path)``."""
    started = time.perf_counter()
    out = Path(out).resolve()
    device = device or default_device()
    runner = Runner(out, device, quiet)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    say(f"nnunet-dicephi demo → {out} (device {device})")

    raw_dir = write_dataset(out / "nnUNet_raw", size, seed)
    runner.run(
        "plan",
        [
            _command("nnUNetv2_plan_and_preprocess"),
            "-d",
            str(DATASET_ID),
            "-c",
            "2d",
            "--no_pp",
            "--verify_dataset_integrity",
        ],
        progress="planning",
    )
    preprocessed = out / "nnUNet_preprocessed" / DATASET_NAME
    shrink_plans(preprocessed / "nnUNetPlans.json", size)
    runner.run(
        "preprocess",
        [_command("nnUNetv2_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "2"],
        progress="preprocessing",
    )
    # one fold trained on every training case; a few of them are nnU-Net's validation set
    cases = sorted(json.loads((raw_dir / "lesion_types.json").read_text())["train"])
    split = [{"train": cases, "val": cases[: size.validation_cases]}]
    write_text_atomically(preprocessed / "splits_final.json", json.dumps(split, indent=2))

    results, predictions = {}, {}
    for expectation in EXPECTATIONS:
        name = trainer_name(expectation.trainer, size)
        runner.run(
            f"train_{expectation.trainer}",
            [_command("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", name, "-device", device],
            progress=f"training {expectation.trainer}",
            total=size.epochs,
            marker="Epoch time:",
        )
        target = out / "predictions" / expectation.trainer
        runner.run(
            f"predict_{expectation.trainer}",
            [
                _command("nnUNetv2_predict"),
                *("-i", str(raw_dir / "imagesTs"), "-o", str(target), "-d", str(DATASET_ID), "-c", "2d"),
                *("-f", "0", "-tr", name, "-chk", "checkpoint_final.pth", "-device", device),
                *("-npp", "1", "-nps", "1", "--disable_tta"),
            ],
            progress=f"predicting {expectation.trainer}",
        )
        predictions[expectation.trainer] = target
        results[expectation.trainer] = evaluate(target, raw_dir)

    table = results_table(results)
    figures = plot_results(results, raw_dir, predictions, out)
    minutes = (time.perf_counter() - started) / 60
    report = out / "report.md"
    write_text_atomically(report, _report_text(table, figures, size, seed, device, minutes))
    write_text_atomically(out / "results.json", json.dumps(results, indent=2))
    say("\n" + table + f"\n\nReport: {report} ({minutes:.1f} min)")
    return results, table, report


def _report_text(table: str, figures: list[Path], size: DemoSize, seed: int, device: str, minutes: float) -> str:
    images = "\n".join(f"![{p.stem}]({p.name})" for p in figures)
    return f"""# nnunet-dicephi demo: Φ and ε with missing labels

Toy dataset ({size.train_cases} training, {size.test_cases} test images of {size.image}×{size.image}, seed {seed}):
one lesion per image, type A uniformly bright, type B bright with stripes. In training, one image
in {size.unlabelled_every} holds type B and its label is an empty map; the test set is balanced and
fully labelled. Each trainer ran
{size.epochs} epochs × {size.iterations} iterations (batch {size.batch_size}) on {device} through
`nnUNetv2_train`, and predicted the test set with `nnUNetv2_predict`; {minutes:.1f} minutes in all.

{table}

DSC is 1 when prediction and reference are both empty. ΔV is the mean predicted minus reference
volume. Why it happens (Eq. 4 of the MICCAI 2022 paper): on a map whose labels are all zero the
gradient of the Dice loss is ≈ ε / (Σỹ)², negligible for ε ≈ 0 when the map is a subset of its own
(Φ = I) — the empty type-B maps are ignored and the network segments type B like type A. When the
subset spans several images (Φ = BI, B ≥ 2) or ε is the expected labelled volume, the gradient on
empty maps is as large as on labelled ones, and the network learns to leave type B out.

{images}
"""

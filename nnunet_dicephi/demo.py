"""``nnunet-dicephi demo``: what Φ and ε do with missing labels, on a toy dataset, through stock nnU-Net.

The toy imitates the BRATS experiment of the MICCAI 2022 paper. Every image holds one lesion of one
of two types that look different: type A is uniformly bright, type B bright with darker stripes.
One training image in three holds type B, and its label is replaced by an empty map (the labelled
type is the majority, as HGG is in BraTS; when the types are balanced, ε = E Σy makes "segment
nothing" exactly as cheap as "segment both types" and training can fall into empty maps for both).
Validation images (never trained on) and the test set are balanced and fully labelled. Three
trainers learn from the same data, each seeded (``--train-seed``) so that a run repeats:

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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_dicephi._files import write_text_atomically
from nnunet_dicephi._nnunet_names import results_folder_name
from nnunet_dicephi.analysis.metrics import SegmentationClass, case_metrics, voxel_volume_ml
from nnunet_dicephi.synthetic import lesion_cases, write_raw_dataset

DATASET_ID = 987
DATASET_NAME = f"Dataset{DATASET_ID}_DicePhiDemo"
TYPES = ("A", "B")


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: the default reproduces the paper's behaviours; tests use a tiny one."""

    train_cases: int = 48
    test_cases: int = 24
    image: int = 48
    epochs: int = 30
    iterations: int = 40
    batch_size: int = 4
    validation_cases: int = 8
    """Held-out, fully labelled images (types alternate) whose per-epoch pseudo-Dice shows the trend."""
    unlabelled_every: int = 3
    """Every n-th training image holds a type-B lesion, the others type A."""


SMOKE = DemoSize(train_cases=8, test_cases=4, image=32, epochs=2, iterations=2, batch_size=2, validation_cases=2)
DEFAULT_TRAIN_SEED = 0


LABELLED_MIN = 0.9
"""Every trainer segments the labelled type A with at least this test DSC."""
SEGMENTED_MIN, LEFT_OUT_MAX = 0.85, 0.1
"""Test DSC of the unlabelled type B: at least this when missing labels are ignored, at most this when
empty maps are learned."""


@dataclass(frozen=True)
class Expectation:
    trainer: str
    label: str
    says: str
    unlabelled_segmented: bool

    def holds(self, dsc: dict[str, float]) -> bool:
        b_ok = dsc["B"] >= SEGMENTED_MIN if self.unlabelled_segmented else dsc["B"] <= LEFT_OUT_MAX
        return dsc["A"] >= LABELLED_MIN and b_ok


EXPECTATIONS = (
    Expectation("TrainerDiceI", "Φ=I, ε≈0", f"ignores missing labels: segments B (DSC B ≥ {SEGMENTED_MIN})", True),
    Expectation("TrainerDiceBI", "Φ=BI, ε≈0", f"learns empty maps: leaves B out (DSC B ≤ {LEFT_OUT_MAX})", False),
    Expectation("TrainerDiceIEps", "Φ=I, ε=E Σy", f"learns empty maps: leaves B out (DSC B ≤ {LEFT_OUT_MAX})", False),
)


# --- data -------------------------------------------------------------------------------------


def write_dataset(raw_root: Path, size: DemoSize, seed: int) -> Path:
    """The toy dataset in nnU-Net's raw format; type-B labels emptied in training. Written atomically.

    ``imagesTr`` also holds the validation images (``toy_val_*``), fully labelled; the demo's split
    never trains on them. The images are :func:`~nnunet_dicephi.synthetic.lesion_case`'s.
    """
    counts = {"train": size.train_cases, "val": size.validation_cases, "test": size.test_cases}
    cases, types = lesion_cases(np.random.default_rng(seed), counts, size.image, size.unlabelled_every)
    return write_raw_dataset(
        raw_root / DATASET_NAME,
        cases,
        labels={"background": 0, "lesion": 1},
        spacing=(1.0, 1.0, 1.0),
        num_training=size.train_cases + size.validation_cases,
        channel="MR",
        description="nnunet-dicephi demo: lesion types A and B; B's labels are empty maps in training",
        extra_files={"lesion_types.json": json.dumps(types, indent=2)},
        replace=True,
    )


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


LESION = SegmentationClass("lesion", (1,))


def evaluate(prediction_dir: Path, raw_dir: Path) -> dict[str, dict[str, float]]:
    """Mean DSC and mean volume difference (prediction − reference, ml) per lesion type.

    The report's metrics (:func:`~nnunet_dicephi.analysis.metrics.case_metrics`): DSC 1 when
    prediction and reference are both empty (nnU-Net's evaluator gives NaN there).
    """
    import SimpleITK as sitk

    types = json.loads((raw_dir / "lesion_types.json").read_text())["test"]
    scores: dict[str, dict[str, list[float]]] = {t: {"dsc": [], "dv": []} for t in TYPES}
    for case, kind in types.items():
        reference_image = sitk.ReadImage(str(raw_dir / "labelsTs" / f"{case}.nii.gz"))
        reference = sitk.GetArrayFromImage(reference_image)
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction_dir / f"{case}.nii.gz")))
        voxel_ml = voxel_volume_ml(reference_image.GetSpacing()[::-1], reference.shape)
        (metrics,) = case_metrics(reference, prediction, [LESION], voxel_ml=voxel_ml)
        scores[kind]["dsc"].append(metrics.dsc)
        scores[kind]["dv"].append(metrics.delta_ml)
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


# --- training trend and what it explains ---------------------------------------------------

TREND_SHARE = 0.25
"""The end of training whose trend explains a result: the last quarter of the epochs (at least 3)."""


def validation_trend(record: dict[int, dict[str, np.ndarray]], types: dict[str, str]) -> dict:
    """Per epoch and lesion type: pooled pseudo-Dice and predicted volume / reference volume.

    ``record`` is a trainer's per-case validation record (one foreground class); cases of a type
    that an epoch's random validation patches missed leave that epoch's value of the type as NaN.
    """
    trend: dict = {"epochs": sorted(record)}
    for kind in TYPES:
        dsc, volume = [], []
        for epoch in trend["epochs"]:
            counts = [c[0] for case, c in record[epoch].items() if types.get(case) == kind]
            tp, fp, fn = np.sum(counts, axis=0) if counts else (0.0, 0.0, 0.0)
            dsc.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else float("nan"))
            volume.append((tp + fp) / (tp + fn) if tp + fn > 0 else float("nan"))
        trend[kind] = {"dsc": dsc, "volume": volume}
    return trend


def left_out_since(trend: dict, kind: str = "B") -> int | None:
    """The epoch from which the validation DSC of ``kind`` stays at most :data:`LEFT_OUT_MAX`, if any."""
    values = [(e, v) for e, v in zip(trend.get("epochs", []), trend.get(kind, {}).get("dsc", [])) if not np.isnan(v)]
    since = None
    for epoch, value in values:
        if value > LEFT_OUT_MAX:
            since = None
        elif since is None:
            since = epoch
    return since


def _end(values: list[float]) -> tuple[float, float, int]:
    """First and last value of the end of training (NaN-free means of the first and last two epochs)."""
    window = max(3, round(len(values) * TREND_SHARE))
    tail = [v for v in values[-window:] if not np.isnan(v)]
    if not tail:
        return float("nan"), float("nan"), window
    head = float(np.mean(tail[:2])) if len(tail) > 2 else tail[0]
    return head, float(np.mean(tail[-2:])), window


def explain(expectation: Expectation, scores: dict, trend: dict) -> str:
    """One sentence: the behaviour as expected, or what the end of training shows instead."""
    dsc = {t: scores[t]["dsc"] for t in TYPES}
    if expectation.holds(dsc):
        if expectation.unlabelled_segmented:
            return f"as expected: segments B (test DSC A {dsc['A']:.2f}, B {dsc['B']:.2f})"
        since = left_out_since(trend)
        when = "" if since is None else f"; on the validation images from epoch {since + 1} of {len(trend['epochs'])}"
        return f"as expected: leaves B out (test DSC A {dsc['A']:.2f}, B {dsc['B']:.2f}{when})"
    if not trend.get("epochs"):
        return f"NOT reproduced (test DSC A {dsc['A']:.2f}, B {dsc['B']:.2f}); no validation record to explain it"
    problems = []
    a_first, a_last, window = _end(trend["A"]["dsc"])
    _, a_volume, _ = _end(trend["A"]["volume"])
    b_first, b_last, _ = _end(trend["B"]["dsc"])
    bv_first, bv_last, _ = _end(trend["B"]["volume"])
    span = f"over the last {window} epochs"
    if dsc["A"] < LABELLED_MIN:
        if a_volume < 0.2:
            problems.append(
                f"fell into empty maps for the labelled type too: predicted volume of A {_pct(a_volume)} of the "
                f"lesion at the end (the absorbing all-empty state, docs/trainers.md: "
                "When the heuristic ε learns nothing)"
            )
        elif a_last - a_first > 0.03:
            problems.append(
                f"still learning the labelled type: DSC A rising from {_fmt(a_first)} to {_fmt(a_last)} {span}"
            )
        else:
            problems.append(f"segments the labelled type poorly: test DSC A {dsc['A']:.2f} (validation {_fmt(a_last)})")
    if expectation.unlabelled_segmented and dsc["B"] < SEGMENTED_MIN:
        if bv_first - bv_last > 0.1:
            problems.append(
                f"learning empty maps for B although Φ=I should ignore them: predicted volume of B falling from "
                f"{_pct(bv_first)} to {_pct(bv_last)} of the lesion {span}"
            )
        elif bv_last > 1.2:
            problems.append(
                f"over-segments B: test DSC B {dsc['B']:.2f}, predicted volume {_pct(bv_last)} of the lesion at the end"
            )
        else:
            problems.append(
                f"segments B only partly: test DSC B {dsc['B']:.2f}, predicted volume {_pct(bv_last)} of the lesion "
                f"at the end; the network does not carry what it learned on A over to B"
            )
    if not expectation.unlabelled_segmented and dsc["B"] > LEFT_OUT_MAX:
        if b_first - b_last > 0.05 or bv_first - bv_last > 0.05:
            problems.append(
                f"still learning the empty maps at the end of training: DSC B falling from {_fmt(b_first)} to "
                f"{_fmt(b_last)} (predicted volume {_pct(bv_first)} → {_pct(bv_last)} of the lesion) {span}; "
                f"train longer"
            )
        else:
            problems.append(
                f"does not learn the empty maps: B stays segmented (validation DSC B {_fmt(b_last)}, predicted "
                f"volume {_pct(bv_last)} of the lesion, flat {span})"
            )
    return f"NOT reproduced (test DSC A {dsc['A']:.2f}, B {dsc['B']:.2f}): " + "; ".join(problems)


def _fmt(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.2f}"


def _pct(value: float) -> str:
    return "–" if np.isnan(value) else f"{100 * value:.0f} %"


def plot_trend(runs: dict, path: Path) -> Path:
    """Validation pseudo-Dice and predicted volume share per epoch, type and trainer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharex=True)
    for index, (trainer, run) in enumerate(runs.items()):
        epochs = [e + 1 for e in run.trend.get("epochs", [])]
        for kind, style in zip(TYPES, ("-", "--")):
            for ax, key in zip(axes, ("dsc", "volume")):
                if epochs:
                    ax.plot(epochs, run.trend[kind][key], style, color=f"C{index}", label=f"{trainer}, {kind}")
    axes[0].set_ylabel("validation pseudo-Dice")
    axes[1].set_ylabel("predicted / lesion volume")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.05, 1.3 if ax is axes[1] else 1.05)
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_results(report, raw_dir: Path, prediction_dirs: dict[str, Path], out: Path) -> list[Path]:
    """Two figures: the report's DSC figure per lesion type and trainer; a test image of each type, every prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from nnunet_dicephi.analysis.rendering import distribution_figure

    trainers = list(prediction_dirs)
    types = json.loads((raw_dir / "lesion_types.json").read_text())["test"]
    per_case = report.per_case.assign(**{"class": report.per_case["case"].map(lambda c: f"lesion type {types[c]}")})
    written = [out / "dsc_per_type.png"]
    distribution_figure(per_case, per_case["dataset"].iloc[0], "dsc", "test DSC (B unlabelled in training)", written[0])

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


class Runner:
    """Runs nnU-Net commands with the demo's folders through the local executor, one log each, with progress bars."""

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
            # nnU-Net's default of 8 spawned processes for fingerprinting and the final validation's
            # export and metrics costs about a minute per command on a small machine, for 8 images
            nnUNet_def_n_proc=os.environ.get("nnUNet_def_n_proc", "1"),
        )

    def run(self, log: str, args: list[str], progress: str | None = None, total: int = 0, marker: str = "") -> None:
        """Run ``args``; with ``marker``, advance a bar by one for each log line starting with it."""
        from tqdm import tqdm

        from nnunet_dicephi.cluster.local import LocalExecutor, Unit
        from nnunet_dicephi.cluster.process import executable, log_tail
        from nnunet_dicephi.cluster.tasks import Task, TaskId

        executable(args[0])  # FileNotFoundError, saying where it was looked for, before anything runs
        path = self.logs / f"{log}.log"
        path.unlink(missing_ok=True)
        unit = Unit(Task(TaskId("demo", item=log), (tuple(args),)), path)
        with tqdm(total=total or None, desc=progress or log, unit="", disable=self.quiet, leave=True) as bar:

            def advance() -> None:
                if marker:
                    bar.update(_count_marker(path, marker) - bar.n)

            LocalExecutor([None], self.env, say=lambda _: None, on_poll=advance).run([unit])
            advance()
        if unit.status != "done":
            raise RuntimeError(f"{' '.join(args[:2])} … failed ({unit.detail}); log {path}:\n{log_tail(path)}")


def predict(runner: Runner, model: Path, images: Path, target: Path, log: Path) -> None:
    """nnU-Net's predictor on ``images``, in this process and without worker processes.

    What ``nnUNetv2_predict -f 0 -chk checkpoint_final.pth --disable_tta`` computes, minus its three
    process starts (this process and its two pools), which cost 15 s per trainer for 16 small images.
    """
    import contextlib

    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(key, runner.env[key])  # nnU-Net warns at import when they are unset
    target.mkdir(parents=True, exist_ok=True)
    with (
        open(log, "w", encoding="utf-8") as handle,
        contextlib.redirect_stdout(handle),
        contextlib.redirect_stderr(handle),
    ):
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        predictor = nnUNetPredictor(
            use_mirroring=False, device=torch.device(runner.device), verbose=False, allow_tqdm=False
        )
        predictor.initialize_from_trained_model_folder(str(model), (0,), checkpoint_name="checkpoint_final.pth")
        predictor.predict_from_files_sequential(str(images), str(target), save_probabilities=False, overwrite=True)


def _count_marker(path: Path, marker: str) -> int:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return sum(marker in line for line in text.splitlines())


def default_device() -> str:
    from nnunet_dicephi.cluster.experiment import this_machines_device

    return this_machines_device()


def trainer_name(base: str, size: DemoSize, train_seed: int = DEFAULT_TRAIN_SEED) -> str:
    # nnU-Net's 1e-2 instead of the Dice-only presets' 1e-3: the demo's few hundred iterations are too
    # few at 1e-3 for Φ=BI and the heuristic ε to learn empty maps; with the labelled type in the
    # majority the heuristic ε did not collapse at 1e-2 (docs/trainers.md, "When the heuristic ε learns nothing")
    return f"{base}_ep{size.epochs}_it{size.iterations}_lr1e-2_seed{train_seed}"


def prepare(runner: Runner, size: DemoSize, seed: int) -> Path:
    """Toy data, nnU-Net's planning with the demo's shrunk plans, preprocessing and the split."""
    out = runner.out
    raw_dir = write_dataset(out / "nnUNet_raw", size, seed)
    runner.run(
        "plan",
        [
            "nnUNetv2_plan_and_preprocess",
            *("-d", str(DATASET_ID), "-c", "2d", "-npfp", "2", "--no_pp", "--verify_dataset_integrity"),
        ],
        progress="planning",
    )
    preprocessed = out / "nnUNet_preprocessed" / DATASET_NAME
    shrink_plans(preprocessed / "nnUNetPlans.json", size)
    runner.run(
        "preprocess",
        ["nnUNetv2_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "2"],
        progress="preprocessing",
    )
    types = json.loads((raw_dir / "lesion_types.json").read_text())
    split = [{"train": sorted(types["train"]), "val": sorted(types["val"])}]
    write_text_atomically(preprocessed / "splits_final.json", json.dumps(split, indent=2))
    return raw_dir


@dataclass
class TrainerRun:
    """One trainer's result: test-set scores, the validation trend and what it means."""

    expectation: Expectation
    name: str
    scores: dict
    trend: dict
    explanation: str
    predictions: Path

    @property
    def holds(self) -> bool:
        return self.expectation.holds({t: self.scores[t]["dsc"] for t in TYPES})


def train_and_evaluate(
    runner: Runner, expectation: Expectation, size: DemoSize, raw_dir: Path, train_seed: int, tag: str = ""
) -> TrainerRun:
    """Train one trainer with ``nnUNetv2_train``, predict the test set, evaluate and explain it."""
    from nnunet_dicephi.evaluation import VALIDATION_FILE, read_validation_record

    name = trainer_name(expectation.trainer, size, train_seed)
    label = f"{expectation.trainer}{tag}"
    runner.run(
        f"train_{label}",
        ["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", name, "-device", runner.device],
        progress=f"training {label}",
        total=size.epochs,
        marker="Epoch time:",
    )
    target = runner.out / "predictions" / label
    fold = runner.out / "nnUNet_results" / DATASET_NAME / results_folder_name(name, "nnUNetPlans", "2d") / "fold_0"
    predict(runner, fold.parent, raw_dir / "imagesTs", target, runner.logs / f"predict_{label}.log")
    scores = evaluate(target, raw_dir)
    types = json.loads((raw_dir / "lesion_types.json").read_text())["val"]
    record_file = fold / VALIDATION_FILE
    trend = validation_trend(read_validation_record(record_file), types) if record_file.is_file() else {}
    return TrainerRun(expectation, name, scores, trend, explain(expectation, scores, trend), target)


def run_demo(
    out: Path,
    size: DemoSize = DemoSize(),
    seed: int = 0,
    device: str | None = None,
    quiet: bool = False,
    train_seed: int = DEFAULT_TRAIN_SEED,
):
    """The whole demo; returns ``(runs, table, report_path)`` with one :class:`TrainerRun` per trainer."""
    started = time.perf_counter()
    out = Path(out).resolve()
    device = device or default_device()
    runner = Runner(out, device, quiet)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    say(f"nnunet-dicephi demo → {out} (device {device}, training seed {train_seed})")

    raw_dir = prepare(runner, size, seed)
    runs = {e.trainer: train_and_evaluate(runner, e, size, raw_dir, train_seed) for e in EXPECTATIONS}
    results = {trainer: run.scores for trainer, run in runs.items()}
    table = results_table(results)
    report = evaluation_report(runs, raw_dir, out / "report")
    figures = plot_results(report, raw_dir, {t: r.predictions for t, r in runs.items()}, out)
    figures.append(plot_trend(runs, out / "training_trend.png"))
    minutes = (time.perf_counter() - started) / 60
    report = out / "report.md"
    write_text_atomically(report, _report_text(table, runs, figures, size, seed, train_seed, device, minutes))
    record = {t: {**r.scores, "trend": r.trend, "explanation": r.explanation} for t, r in runs.items()}
    write_text_atomically(out / "results.json", json.dumps(record, indent=2))
    say("\n" + table)
    for run in runs.values():
        say(f"{run.expectation.trainer}: {run.explanation}")
    say(f"\nReport: {report} ({minutes:.1f} min)")
    missed = [run.expectation.trainer for run in runs.values() if not run.holds]
    if missed and size != SMOKE:
        say(miss_line(missed, train_seed))
    return runs, table, report


MEASURED_SEEDS = "16 training seeds (200–215) that did not choose the setting"
"""Where the default setting was measured to hold every behaviour (README, "The demo")."""


def miss_line(missed: Sequence[str], train_seed: int) -> str:
    """The demo's last line when a behaviour was not reproduced: what the miss means."""
    return (
        f"Not reproduced with training seed {train_seed}: {', '.join(missed)}; its line above says what its "
        f"validation images showed. The default setting held every behaviour on {MEASURED_SEEDS}: a miss "
        "is this training's run, not the claim; most often the empty maps were still being learned when "
        "training ended: run again with another --train-seed, or train longer (scripts/demo_seeds.py --epochs N)."
    )


def evaluation_report(runs: dict[str, TrainerRun], raw_dir: Path, output: Path):
    """``nnunet-dicephi report`` over the test predictions: per-case table, p-values between trainers, figures."""
    from nnunet_dicephi.analysis.report import build_report

    return build_report(
        [run.predictions for run in runs.values()],
        output,
        reference=raw_dir / "labelsTs",
        dataset_json=raw_dir / "dataset.json",
        n_resamples=2000,
        workers=1,
        force=True,
        all_pairs=True,
    )


def _trend_table(runs: dict[str, TrainerRun]) -> str:
    lines = [
        "| trainer | epoch | DSC A | volume A | DSC B | volume B |",
        "|---|---|---|---|---|---|",
    ]
    for trainer, run in runs.items():
        epochs = run.trend.get("epochs", [])
        if not epochs:
            continue
        shown = sorted({epochs[len(epochs) // 2], epochs[(3 * len(epochs)) // 4], epochs[-1]})
        for epoch in shown:
            i = epochs.index(epoch)
            a, b = run.trend["A"], run.trend["B"]
            lines.append(
                f"| {trainer} | {epoch + 1} | {_fmt(a['dsc'][i])} | {_pct(a['volume'][i])} "
                f"| {_fmt(b['dsc'][i])} | {_pct(b['volume'][i])} |"
            )
    return "\n".join(lines)


def _report_text(
    table: str,
    runs: dict[str, TrainerRun],
    figures: list[Path],
    size: DemoSize,
    seed: int,
    train_seed: int,
    device: str,
    minutes: float,
) -> str:
    images = "\n".join(f"![{p.stem}]({p.name})" for p in figures)
    verdicts = "\n".join(f"- **{t}** (`{r.name}`): {r.explanation}" for t, r in runs.items())
    return f"""# nnunet-dicephi demo: Φ and ε with missing labels

Toy dataset ({size.train_cases} training, {size.validation_cases} validation and {size.test_cases} test
images of {size.image}×{size.image}, data seed {seed}): one lesion per image, type A uniformly bright,
type B bright with darker stripes. In training, one image in {size.unlabelled_every} holds type B
and its label is an empty map; validation and test images are balanced and fully labelled. Each
trainer ran {size.epochs} epochs × {size.iterations} iterations (batch {size.batch_size}, training seed
{train_seed}) on {device} through `nnUNetv2_train`, and predicted the test set with nnU-Net's
predictor (what `nnUNetv2_predict` runs, here without worker processes); {minutes:.1f} minutes in all.

{table}

DSC is 1 when prediction and reference are both empty. ΔV is the mean predicted minus reference
volume. `report/` holds `nnunet-dicephi report` over the same test predictions: the per-case
table, paired bootstrap p-values between the trainers and the report's figures.

Why it happens (Eq. 4 of the MICCAI 2022 paper): on a map whose labels are all zero the gradient of
the Dice loss is ≈ ε / (Σỹ)², negligible for ε ≈ 0 when the map is a subset of its own (Φ = I) — the
empty type-B maps are ignored and the network segments type B like type A. When the subset spans
several images (Φ = BI, B ≥ 2) or ε is the expected labelled volume, the gradient on empty maps is
as large as on labelled ones, and the network learns to leave type B out.

## What each trainer did

{verdicts}

## Training trend on the validation images

nnU-Net's online pseudo-Dice, per lesion type, on the {size.validation_cases} held-out validation images
(the patches of each epoch's validation iterations), and the predicted volume as a share of the
lesion's. Recorded by the trainers in `fold_0/dicephi_validation.jsonl`.

{_trend_table(runs)}

{images}
"""

#!/usr/bin/env bash
# Reproduce the ACDC experiment of Tilborghs, Bertels et al., "The Dice loss in the context of
# missing or empty labels: introducing Φ and ε" (MICCAI 2022), Sect. 3 and Table 1, with nnU-Net v2.
#
#   scripts/reproduce_miccai2022_acdc.sh /path/to/ACDC/database [OUTPUT_DIR]
#
# Needs nnUNet_raw, nnUNet_preprocessed and nnUNet_results exported and this project installed
# (`pip install .`: nnU-Net then finds the trainers by itself). Steps:
#   1. convert the training data three times (ED and ES frames are separate cases, patient001_ED …):
#      - Full: fully labelled (Table 1 "Full");
#      - Partial, empty-label view (--as-empty): the myocardium removed in every ES frame and no
#        manifest in dataset.json, so the trainers take the empty MYO maps at face value (Table 1
#        "Partial": Φ = I, Φ = BI, Φ = I with the heuristic ε);
#      - Partial, missing-label view: the same labels, with the manifest declaring MYO as not
#        annotated in ES, for the losses built for missing labels (marginal and leaf Dice).
#      Each comes with a splits_final.json that keeps ED and ES of a patient in one fold.
#   2. plan and preprocess (--verify_dataset_integrity), then install the grouped splits.
#   3. train TrainerDiceI, TrainerDiceBI and TrainerDiceIEps on Full and Partial (empty view), and
#      TrainerMarginalDice and TrainerLeafDice on Partial (missing view); 5 folds, B = 2.
#   4. report (DSC, ΔV in ml, detection ROC/AUC, paired bootstrap p-values): per dataset, and
#      Table 1 itself — ED and ES frames apart, every configuration side by side — from the pooled
#      cross-validation predictions, against the fully labelled references (labelsTr_full/).
#
# Batch size. The paper ran ACDC at B = 2 only. Trainer names have no batch-size option
# (nnunet_dicephi/loss_config.py); the batch size is a plans setting, so this script writes
# nnUNetPlans_bs<B>.json (nnUNetPlans.json with the configuration's batch_size = B, same
# preprocessed data) and trains with `-p nnUNetPlans_bs<B>`; set BATCH_SIZES="1 2 4 8" to sweep B.
#
# Not reproduced as such: the paper's network (No New-Net with batch normalisation and pReLU on
# 192 × 192 × 48 images of 1.56 × 1.56 × 2.5 mm) and its ED:ES = 3:1 sampling for Φ = I with ε
# (a sampling choice of the trainer, not of the data). Background is left out of the Dice loss, as
# in the paper.
#
# Settings (environment variables, defaults in brackets):
#   FULL_ID [270], EMPTY_ID [271], MISSING_ID [272]   dataset ids
#   CONFIG [3d_fullres], FOLDS ["0 1 2 3 4"], BATCH_SIZES ["2"]
#   TRAINERS ["TrainerDiceI TrainerDiceBI TrainerDiceIEps"]   on Full and the empty-label view
#   MISSING_TRAINERS ["TrainerMarginalDice TrainerLeafDice"]  on the missing-label view
#   TRAINER_SUFFIX [""]                 appended to every trainer name: "_ep1_it2" for a smoke run,
#                                       "_lr1e-2" for nnU-Net's learning rate (options in naming.py order)
#   DEVICE [cuda], NP [8] (preprocessing processes), WORKERS [4] (conversion processes)
# Re-running skips datasets already converted or preprocessed and folds already trained (interrupted
# folds resume).
set -euo pipefail

SOURCE=${1:?usage: $0 ACDC/database [OUTPUT_DIR]}
OUTPUT=${2:-miccai2022_acdc}
: "${nnUNet_raw:?export nnUNet_raw}" "${nnUNet_preprocessed:?export nnUNet_preprocessed}"
: "${nnUNet_results:?export nnUNet_results}"
FULL_ID=${FULL_ID:-270}
EMPTY_ID=${EMPTY_ID:-271}
MISSING_ID=${MISSING_ID:-272}
CONFIG=${CONFIG:-3d_fullres}
read -r -a FOLD_LIST <<<"${FOLDS:-0 1 2 3 4}"
read -r -a BATCH_LIST <<<"${BATCH_SIZES:-2}"
read -r -a TRAINER_LIST <<<"${TRAINERS:-TrainerDiceI TrainerDiceBI TrainerDiceIEps}"
read -r -a MISSING_TRAINER_LIST <<<"${MISSING_TRAINERS:-TrainerMarginalDice TrainerLeafDice}"
TRAINER_SUFFIX=${TRAINER_SUFFIX:-}
DEVICE=${DEVICE:-cuda}
NP=${NP:-8}
WORKERS=${WORKERS:-4}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FULL=Dataset$(printf %03d "$FULL_ID")_ACDC
EMPTY=Dataset$(printf %03d "$EMPTY_ID")_ACDCMyoESEmpty
MISSING=Dataset$(printf %03d "$MISSING_ID")_ACDCMyoESMissing

say() { printf '\n== %s\n' "$*"; }

# 1. convert ------------------------------------------------------------------------------------
convert() { # convert DATASET_FOLDER ARGS...
    if [[ -f "$nnUNet_raw/$1/dataset.json" ]]; then
        echo "$1 exists; not converted again"
    else
        python "$HERE/convert_acdc.py" "$SOURCE" -j "$WORKERS" "${@:2}"
    fi
}
say "converting $SOURCE"
convert "$FULL" -d "$FULL_ID" --name ACDC
convert "$EMPTY" -d "$EMPTY_ID" --name ACDCMyoESEmpty --scheme es-myo-empty --as-empty
convert "$MISSING" -d "$MISSING_ID" --name ACDCMyoESMissing --scheme es-myo-empty

# 2. plan, preprocess, install the patient-grouped splits ------------------------------------------
plans_for_batch_size() { # plans_for_batch_size DATASET_FOLDER B -> prints the plans identifier
    python - "$nnUNet_preprocessed/$1" "$CONFIG" "$2" <<'EOF'
import json, sys
from pathlib import Path

folder, config, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
plans = json.loads((folder / "nnUNetPlans.json").read_text())
if config not in plans["configurations"]:
    sys.exit(f"{config} is not in {folder / 'nnUNetPlans.json'}")
name = f"nnUNetPlans_bs{batch}"
plans["plans_name"] = name
plans["configurations"][config]["batch_size"] = batch
(folder / f"{name}.json").write_text(json.dumps(plans, indent=2))
print(name)
EOF
}
for pair in "$FULL:$FULL_ID" "$EMPTY:$EMPTY_ID" "$MISSING:$MISSING_ID"; do
    if [[ -d "$nnUNet_preprocessed/${pair%%:*}/nnUNetPlans_$CONFIG" ]]; then
        echo "${pair%%:*}: planned and preprocessed already"
    else
        say "planning and preprocessing ${pair%%:*} ($CONFIG)"
        nnUNetv2_plan_and_preprocess -d "${pair##*:}" -c "$CONFIG" -np "$NP" --verify_dataset_integrity
    fi
    # nnU-Net's planner copies the raw splits_final.json when it can; this installs or confirms it,
    # and stops the recipe if a different (random, case-wise) split is already in place
    python -m nnunet_dicephi.conversion install-splits "${pair##*:}"
done

# 3. train ---------------------------------------------------------------------------------------
train() { # train DATASET_FOLDER DATASET_ID PLANS TRAINER
    local fold
    for fold in "${FOLD_LIST[@]}"; do
        if [[ -f "$nnUNet_results/$1/${4}__${3}__${CONFIG}/fold_$fold/validation/summary.json" ]]; then
            echo "$1 $4 $3 fold $fold: trained and validated already"
            continue
        fi
        say "training $1 $4 $3 fold $fold"
        # --c resumes an interrupted fold (or its final validation); without a checkpoint it starts afresh
        nnUNetv2_train "$2" "$CONFIG" "$fold" -tr "$4" -p "$3" -device "$DEVICE" --c
    done
}
for batch in "${BATCH_LIST[@]}"; do
    for pair in "$FULL:$FULL_ID" "$EMPTY:$EMPTY_ID"; do
        plans=$(plans_for_batch_size "${pair%%:*}" "$batch")
        for trainer in "${TRAINER_LIST[@]}"; do
            train "${pair%%:*}" "${pair##*:}" "$plans" "$trainer$TRAINER_SUFFIX"
        done
    done
    plans=$(plans_for_batch_size "$MISSING" "$batch")
    for trainer in "${MISSING_TRAINER_LIST[@]}"; do
        train "$MISSING" "$MISSING_ID" "$plans" "$trainer$TRAINER_SUFFIX"
    done
done

# 4. report ----------------------------------------------------------------------------------------
REFERENCE="$nnUNet_raw/$EMPTY/labelsTr_full"
say "reports per dataset"
nnunet-dicephi report "$nnUNet_results/$FULL" --folds "${FOLD_LIST[@]}" -o "$OUTPUT/report_full" --force
# partially labelled training, fully labelled references: every (case, class) pair counts
for dataset in "$EMPTY" "$MISSING"; do
    nnunet-dicephi report "$nnUNet_results/$dataset" --folds "${FOLD_LIST[@]}" --reference "$REFERENCE" \
        --all-pairs -o "$OUTPUT/report_${dataset#Dataset*_}" --force
done

# Table 1: ED and ES frames apart, every configuration side by side (and tested pairwise), from
# the pooled validation predictions of the cross-validation
pool() { # pool DATASET_FOLDER TRAINER_FOLDER DESTINATION CASE_SUFFIX
    local fold file
    mkdir -p "$3"
    for fold in "${FOLD_LIST[@]}"; do
        for file in "$nnUNet_results/$1/$2/fold_$fold/validation/"*"$4".nii.gz; do
            if [[ -e "$file" ]]; then
                ln -sfn "$(cd "$(dirname "$file")" && pwd)/$(basename "$file")" "$3/"
            fi
        done
    done
}
for phase in ED ES; do
    pooled="$OUTPUT/pooled_$phase"
    rm -rf "$pooled"
    for batch in "${BATCH_LIST[@]}"; do
        for trainer in "${TRAINER_LIST[@]}"; do
            folder="${trainer}${TRAINER_SUFFIX}__nnUNetPlans_bs${batch}__${CONFIG}"
            pool "$FULL" "$folder" "$pooled/Full_${trainer}_B$batch" "_$phase"
            pool "$EMPTY" "$folder" "$pooled/Partial_${trainer}_B$batch" "_$phase"
        done
        for trainer in "${MISSING_TRAINER_LIST[@]}"; do
            folder="${trainer}${TRAINER_SUFFIX}__nnUNetPlans_bs${batch}__${CONFIG}"
            pool "$MISSING" "$folder" "$pooled/Partial_${trainer}_B$batch" "_$phase"
        done
    done
    say "Table 1, $phase"
    nnunet-dicephi report "$pooled"/*/ --reference "$REFERENCE" --dataset-json "$nnUNet_raw/$FULL/dataset.json" \
        -o "$OUTPUT/table1_$phase" --force
done
say "done: $OUTPUT/table1_ED/report.md, $OUTPUT/table1_ES/report.md, $OUTPUT/report_*/report.md"

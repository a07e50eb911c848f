#!/usr/bin/env bash
# Reproduce the BRATS experiment of Tilborghs, Bertels et al., "The Dice loss in the context of
# missing or empty labels: introducing Φ and ε" (MICCAI 2022), Sect. 3 and Table 1, with nnU-Net v2.
#
#   scripts/reproduce_miccai2022_brats.sh /path/to/MICCAI_BraTS_2018_Data_Training [OUTPUT_DIR]
#
# Needs nnUNet_raw, nnUNet_preprocessed and nnUNet_results exported and this project installed
# (`pip install .`: nnU-Net then finds the trainers by itself). Steps:
#   1. convert the training data twice: fully labelled (Table 1 "Full") and with every LGG label
#      replaced by an empty map (Table 1 "Partial"). The partial dataset is written in the
#      empty-label view (--as-empty): its dataset.json has no manifest, so every trainer takes the
#      empty maps at face value — which is the experiment. The untouched labels stay in
#      labelsTr_full/ and are the fully labelled reference of the evaluation, as in the paper.
#   2. plan and preprocess both datasets, checking them with --verify_dataset_integrity.
#   3. train Φ = I (TrainerDiceI), Φ = BI (TrainerDiceBI) and Φ = I with the heuristic ε
#      (TrainerDiceIEps) on both, for every fold and batch size.
#   4. report (DSC, ΔV in ml, detection ROC/AUC, paired bootstrap p-values): per dataset, and
#      Table 1 itself — HGG and LGG cases apart, Full against Partial — from the pooled
#      cross-validation predictions.
#
# Batch size. The paper varies B ∈ {1, 2, 4, 8}: Φ = BI ignores empty maps at B = 1 and learns them
# at B > 1. Trainer names have no batch-size option (nnunet_dicephi/loss_config.py: eps, alpha/
# beta, CE, bg, ep, it); in nnU-Net the batch size is a plans setting. For each B this script
# writes the plans variant nnUNetPlans_bs<B>.json (nnUNetPlans.json with the configuration's
# batch_size = B; same preprocessed data) and trains with `-p nnUNetPlans_bs<B>`, so each B gets
# its own results folder <Trainer>__nnUNetPlans_bs<B>__<CONFIG>.
#
# Not reproduced as such: the paper's No New-Net architecture on 2 mm isotropic images with
# 80 × 80 × 48 patches and one sigmoid output; here nnU-Net plans its own network (softmax over
# background and tumour, background left out of the Dice loss). Edit the plans to get closer.
#
# Settings (environment variables, defaults in brackets):
#   FULL_ID [180], PARTIAL_ID [181]     dataset ids
#   CONFIG [3d_fullres]                 nnU-Net configuration
#   FOLDS ["0 1 2 3 4"]                 folds to train and pool
#   BATCH_SIZES ["1 2 4 8"]             the paper's batch sizes
#   TRAINERS ["TrainerDiceI TrainerDiceBI TrainerDiceIEps"]
#   TRAINER_SUFFIX [""]                 appended to every trainer name: "_ep1_it2" for a smoke run,
#                                       "_lr1e-2" for nnU-Net's learning rate (options in naming.py order)
#   DEVICE [cuda], NP [8] (preprocessing processes), WORKERS [4] (conversion processes)
# Re-running skips datasets already converted or preprocessed and folds already trained (interrupted
# folds resume).
set -euo pipefail

SOURCE=${1:?usage: $0 MICCAI_BraTS_2018_Data_Training [OUTPUT_DIR]}
OUTPUT=${2:-miccai2022_brats}
: "${nnUNet_raw:?export nnUNet_raw}" "${nnUNet_preprocessed:?export nnUNet_preprocessed}"
: "${nnUNet_results:?export nnUNet_results}"
FULL_ID=${FULL_ID:-180}
PARTIAL_ID=${PARTIAL_ID:-181}
CONFIG=${CONFIG:-3d_fullres}
read -r -a FOLD_LIST <<<"${FOLDS:-0 1 2 3 4}"
read -r -a BATCH_LIST <<<"${BATCH_SIZES:-1 2 4 8}"
read -r -a TRAINER_LIST <<<"${TRAINERS:-TrainerDiceI TrainerDiceBI TrainerDiceIEps}"
TRAINER_SUFFIX=${TRAINER_SUFFIX:-}
DEVICE=${DEVICE:-cuda}
NP=${NP:-8}
WORKERS=${WORKERS:-4}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FULL=Dataset$(printf %03d "$FULL_ID")_BraTS2018
PARTIAL=Dataset$(printf %03d "$PARTIAL_ID")_BraTS2018LGGEmpty

say() { printf '\n== %s\n' "$*"; }

# 1. convert ------------------------------------------------------------------------------------
convert() { # convert DATASET_FOLDER ARGS...
    if [[ -f "$nnUNet_raw/$1/dataset.json" ]]; then
        echo "$1 exists; not converted again"
    else
        python "$HERE/convert_brats2018.py" "$SOURCE" -j "$WORKERS" "${@:2}"
    fi
}
say "converting $SOURCE"
convert "$FULL" -d "$FULL_ID" --name BraTS2018
convert "$PARTIAL" -d "$PARTIAL_ID" --name BraTS2018LGGEmpty --scheme lgg-empty --as-empty

# 2. plan and preprocess, and one plans variant per batch size -----------------------------------
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
plan() { # plan DATASET_FOLDER DATASET_ID
    if [[ -d "$nnUNet_preprocessed/$1/nnUNetPlans_$CONFIG" ]]; then
        echo "$1: planned and preprocessed already"
    else
        say "planning and preprocessing $1 ($CONFIG)"
        nnUNetv2_plan_and_preprocess -d "$2" -c "$CONFIG" -np "$NP" --verify_dataset_integrity
    fi
}
plan "$FULL" "$FULL_ID"
plan "$PARTIAL" "$PARTIAL_ID"

# 3. train ---------------------------------------------------------------------------------------
train() { # train DATASET_FOLDER DATASET_ID PLANS TRAINER
    local fold
    for fold in "${FOLD_LIST[@]}"; do
        if [[ -f "$nnUNet_results/$1/${4}__${3}__${CONFIG}/fold_$fold/validation/summary.json" ]]; then
            echo "$1 $4 $3 fold $fold: trained and validated already"
            continue
        fi
        # --c resumes an interrupted fold (or its final validation); without a checkpoint it starts afresh
        say "training $1 $4 $3 fold $fold"
        nnUNetv2_train "$2" "$CONFIG" "$fold" -tr "$4" -p "$3" -device "$DEVICE" --c
    done
}
for batch in "${BATCH_LIST[@]}"; do
    for pair in "$FULL:$FULL_ID" "$PARTIAL:$PARTIAL_ID"; do
        plans=$(plans_for_batch_size "${pair%%:*}" "$batch")
        for trainer in "${TRAINER_LIST[@]}"; do
            train "${pair%%:*}" "${pair##*:}" "$plans" "$trainer$TRAINER_SUFFIX"
        done
    done
done

# 4. report ----------------------------------------------------------------------------------------
REFERENCE="$nnUNet_raw/$PARTIAL/labelsTr_full"
say "reports per dataset"
nnunet-dicephi report "$nnUNet_results/$FULL" --folds "${FOLD_LIST[@]}" -o "$OUTPUT/report_full" --force
# the partial dataset's own labels are emptied: measure against the fully labelled ones
nnunet-dicephi report "$nnUNet_results/$PARTIAL" --folds "${FOLD_LIST[@]}" --reference "$REFERENCE" --all-pairs \
    -o "$OUTPUT/report_partial" --force

# Table 1: HGG and LGG apart, every configuration of both datasets side by side (and tested
# pairwise), from the pooled validation predictions of the cross-validation
pool() { # pool DATASET_FOLDER TRAINER_FOLDER DESTINATION CASE_PREFIX
    local fold file
    mkdir -p "$3"
    for fold in "${FOLD_LIST[@]}"; do
        for file in "$nnUNet_results/$1/$2/fold_$fold/validation/$4"*.nii.gz; do
            if [[ -e "$file" ]]; then
                ln -sfn "$(cd "$(dirname "$file")" && pwd)/$(basename "$file")" "$3/"
            fi
        done
    done
}
for subset in HGG LGG; do
    pooled="$OUTPUT/pooled_$subset"
    rm -rf "$pooled"
    for batch in "${BATCH_LIST[@]}"; do
        for trainer in "${TRAINER_LIST[@]}"; do
            folder="${trainer}${TRAINER_SUFFIX}__nnUNetPlans_bs${batch}__${CONFIG}"
            pool "$FULL" "$folder" "$pooled/Full_${trainer}_B$batch" "${subset}_"
            pool "$PARTIAL" "$folder" "$pooled/Partial_${trainer}_B$batch" "${subset}_"
        done
    done
    say "Table 1, $subset"
    nnunet-dicephi report "$pooled"/*/ --reference "$REFERENCE" --dataset-json "$nnUNet_raw/$FULL/dataset.json" \
        -o "$OUTPUT/table1_$subset" --force
done
say "done: $OUTPUT/table1_HGG/report.md, $OUTPUT/table1_LGG/report.md, $OUTPUT/report_*/report.md"

#!/usr/bin/env bash
# Fine-tune a released Kinetics-400 Video-FocalNet on a folder prepared by `python -m datasets.prepare folder`.
#
#   scripts/finetune.sh DATA_DIR PRETRAINED [main.py args ...]
#   scripts/finetune.sh data/own pretrained/video-focalnet_base_k400.pth
#   scripts/finetune.sh data/own pretrained/video-focalnet_tiny_k400.pth --opts TRAIN.EPOCHS 10
#
# DATA_DIR holds labels.csv, train.csv, val.csv and manifest.json; the number of classes is taken from
# labels.csv, DATA.ROOT from the manifest. PRETRAINED is a Video-FocalNet checkpoint (its head is replaced by
# one for the new classes). Runs go to OUTPUT/<DATA_DIR name>/video-focalnet_<MODEL>/<tag> (OUTPUT: output).
#
# Environment variables (default):
#   MODEL    toy | tiny | small | base (the checkpoint's model, read by python -m tools.finetune_size):
#            configs/finetune/video-focalnet_<MODEL>.yaml
#   GPUS, NNODES, OUTPUT, PYTHON ...: see scripts/launch.sh
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 DATA_DIR PRETRAINED [main.py arguments ...]" >&2
    exit 2
fi
DATA_DIR=$1
PRETRAINED=$2
shift 2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SIZES=$(cd "$HERE/finetune" && ls video-focalnet_*.sh | sed 's/^video-focalnet_//; s/\.sh$//' | tr '\n' ' ')
if [ -n "${MODEL:-}" ] && [ ! -x "$HERE/finetune/video-focalnet_${MODEL}.sh" ]; then
    echo "error: MODEL=$MODEL: expected one of: ${SIZES% } (or leave MODEL unset: the checkpoint tells)" >&2
    exit 2
fi
for f in labels.csv train.csv val.csv; do
    if [ ! -f "$DATA_DIR/$f" ]; then
        echo "error: $DATA_DIR/$f not found; prepare the folder first: python -m datasets.prepare folder --videos DIR --out $DATA_DIR" >&2
        exit 2
    fi
done
if [ ! -f "$PRETRAINED" ]; then
    echo "error: $PRETRAINED: checkpoint not found (PRETRAINED)" >&2
    exit 2
fi
# the recipe of the checkpoint's model (its weight shapes), unless MODEL names one
if [ -z "${MODEL:-}" ]; then
    MODEL=$(PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python}" -m tools.finetune_size "$PRETRAINED") \
        || exit 2
fi
SCRIPT="$HERE/finetune/video-focalnet_${MODEL}.sh"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
PRETRAINED="$(cd "$(dirname "$PRETRAINED")" && pwd)/$(basename "$PRETRAINED")"
# the lists' paths are relative to the manifest's root (the video folder)
ROOT=$("${PYTHON:-python}" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("root") or "")' \
       "$DATA_DIR/manifest.json" 2>/dev/null || true)
# best.pth is chosen on val.csv; its final test runs on the held-out test.csv when the manifest lists one (a
# test.csv it does not list is left over from an earlier preparation and may name videos now in train)
if "${PYTHON:-python}" -c 'import json, sys; sys.exit("test" not in json.load(open(sys.argv[1])).get("splits", {}))' \
       "$DATA_DIR/manifest.json" 2>/dev/null; then
    TEST_LIST="$DATA_DIR/test.csv"
else
    TEST_LIST=""
    echo "note: $DATA_DIR/manifest.json lists no test split: best.pth is tested on val.csv, the list it was chosen on" \
         "(prepare with --test-fraction for a held-out test)" >&2
fi
export DATA_ROOT="${ROOT}"
[ -n "$DATA_ROOT" ] || unset DATA_ROOT
exec "$SCRIPT" --pretrained "$PRETRAINED" --opts DATA.TRAIN_FILE "$DATA_DIR/train.csv" \
    DATA.VAL_FILE "$DATA_DIR/val.csv" DATA.TEST_FILE "$TEST_LIST" DATA.LABEL_LIST "$DATA_DIR/labels.csv" DATA.DATASET "$(basename "$DATA_DIR")" "$@"

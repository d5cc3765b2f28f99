#!/usr/bin/env bash
# The embedded demo (`make demo`): Mask R-CNN + MILA-T trained on CPU on a generated toy COCO set.
#
#   1. tools/data/make_toy_coco.py draws the set (4 classes of shapes, polygon masks, COCO JSON);
#   2. tools/train.sh trains configs/demo/mask_rcnn_mila_t_toy.py (the 3x recipe at toy scale);
#   3. tools/test.sh evaluates the last checkpoint with CocoMetric (bbox and segm AP);
#   4. mmdet's DetInferencer draws the predictions on toy validation images and on real photos
#      from scikit-image.
#
# DEMO_WORK_DIR (default work_dirs/demo) holds everything; DEMO_CFG_OPTIONS adds --cfg-options
# entries to the training (e.g. "train_cfg.max_epochs=1" for a quick pipeline check).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python}
export PYTHON
# setuptools' "pkg_resources is deprecated" notice, printed when mmengine/mmcv are imported: nothing the
# user can act on, so the demo's own Python steps do not show it (train.py and test.py filter it too).
export PYTHONWARNINGS="ignore:pkg_resources is deprecated:UserWarning${PYTHONWARNINGS:+,$PYTHONWARNINGS}"
# One single-threaded process per core: on 2 cores, two 1-thread processes train and test several
# times faster than one 2-thread process (torch's thread pool stalls whenever the machine is busy).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
WORK=$(realpath -m "${DEMO_WORK_DIR:-work_dirs/demo}")
CONFIG=configs/demo/mask_rcnn_mila_t_toy.py
DATA="$WORK/toy_coco"
NUM_TRAIN=${DEMO_NUM_TRAIN:-48}
NUM_VAL=${DEMO_NUM_VAL:-30}
START=$(date +%s)

# The config's data_root is work_dirs/demo/toy_coco/; these options follow DEMO_WORK_DIR.
DATA_OPTS=()
for loader in train_dataloader val_dataloader test_dataloader; do
    DATA_OPTS+=("$loader.dataset.data_root=$DATA/")
done
DATA_OPTS+=("val_evaluator.ann_file=$DATA/annotations/instances_val.json"
            "test_evaluator.ann_file=$DATA/annotations/instances_val.json")
read -r -a EXTRA_OPTS <<< "${DEMO_CFG_OPTIONS:-}"

echo "== [1/4] toy COCO set -> $DATA"
rm -rf "$DATA"
"$PYTHON" tools/data/make_toy_coco.py "$DATA" --num-train "$NUM_TRAIN" --num-val "$NUM_VAL" --size 128

echo "== [2/4] training Mask R-CNN + MILA-T on CPU: tools/train.sh, 2 processes (DDP over gloo) -> $WORK/train"
rm -rf "$WORK/train" "$WORK/test" "$WORK/inference"
PORT=$(free_port) bash tools/train.sh "$CONFIG" 2 --work-dir "$WORK/train" --cfg-options "${DATA_OPTS[@]}" "${EXTRA_OPTS[@]}"
CHECKPOINT=$(cat "$WORK/train/last_checkpoint")

echo "== [3/4] COCO evaluation of $CHECKPOINT (tools/test.sh, 2 processes)"
PORT=$(free_port) bash tools/test.sh "$CONFIG" "$CHECKPOINT" 2 --work-dir "$WORK/test" --cfg-options "${DATA_OPTS[@]}"

echo "== [4/4] DetInferencer on toy validation images and real photos -> $WORK/inference"
"$PYTHON" - "$CONFIG" "$CHECKPOINT" "$DATA" "$WORK" "$START" <<'EOF'
import glob
import json
import os
import sys
import time

import numpy as np
from PIL import Image
from skimage import data as skdata

import mmmila  # noqa: F401  (registers MILA; the checkpoint policy)
from mmdet.apis import DetInferencer
from mmmila.checkpoint import trusted_paths

config, checkpoint, data_root, work, start = sys.argv[1:6]
out = os.path.join(work, 'inference')
photos = os.path.join(out, 'photos')
os.makedirs(photos, exist_ok=True)
images = sorted(glob.glob(os.path.join(data_root, 'val', '*.png')))[:6]
for name in ('astronaut', 'coffee'):
    path = os.path.join(photos, f'{name}.png')
    Image.fromarray(getattr(skdata, name)()).save(path)
    images.append(path)
with trusted_paths(work):  # the demo's own checkpoint, written by the training above
    inferencer = DetInferencer(model=config, weights=checkpoint, device='cpu', show_progress=False)
result = inferencer(images, out_dir=out, no_save_pred=False, pred_score_thr=0.5)
counts = [int((np.asarray(p['scores']) >= 0.5).sum()) for p in result['predictions']]

# loss of the first and last logged training iterations, and the evaluation's metrics
scalars = sorted(glob.glob(os.path.join(work, 'train', '*', 'vis_data', 'scalars.json')))[-1]
losses = [json.loads(line)['loss'] for line in open(scalars) if '"loss"' in line]
metrics = sorted(glob.glob(os.path.join(work, 'test', '*', '*.json')))[-1]
scores = json.load(open(metrics))
print('\n== mmmila demo: done in %.1f min' % ((time.time() - float(start)) / 60))
print(f'  training loss     {losses[0]:.3f} (first logged) -> {losses[-1]:.3f} (last logged)')
print(f"  toy val bbox AP   {scores['coco/bbox_mAP']:.3f}   (AP50 {scores['coco/bbox_mAP_50']:.3f})")
print(f"  toy val segm AP   {scores['coco/segm_mAP']:.3f}   (AP50 {scores['coco/segm_mAP_50']:.3f})")
print(f'  detections >= 0.5 per image: ' + ', '.join(
    f'{os.path.basename(p)}: {n}' for p, n in zip(images, counts)))
print(f'  checkpoint        {checkpoint}')
print(f'  training log      {os.path.dirname(os.path.dirname(scalars))}')
print(f'  metrics           {metrics}')
print(f'  visualisations    {os.path.join(out, "vis")}  (toy val images and real photos)')
print(f'  predictions       {os.path.join(out, "preds")}')
EOF

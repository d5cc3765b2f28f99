"""Datasets: the checked ADE20K dataset and annotation loader (`ade20k.py`, needs mmseg; checks in
`ade_checks.py`) and the toy sets the demo and tests draw (`toy_coco.py`, `toy_ade.py`)."""

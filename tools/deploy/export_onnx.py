#!/usr/bin/env python
"""Export a model of a config to ONNX (dynamo exporter) and check it with onnxruntime.

    python tools/deploy/export_onnx.py CONFIG [CHECKPOINT] --out FILE [--shape H W] [--dynamic]
        [--part model|features|backbone]

What is exported and checked: ``mmmila/deploy/onnx_export.py`` and docs/deploy.md.
"""
import sys
import warnings

# setuptools' "pkg_resources is deprecated" notice, raised when mmengine and mmcv are imported (once per
# process): nothing the user can act on. Filtered here, in the tool, before those imports.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from mmmila.deploy.onnx_export import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())

"""ADE20K dataset and label loading that check their input (see ``ade_checks.py``).

``ADE20KCheckedDataset`` is mmseg's ``ADE20KDataset`` plus checks of its folders and label files;
with ``data_prefix['seg_map_path'] = None`` it reads an unlabelled split, such as the benchmark's test
images. ``LoadCheckedSegAnnotations`` is mmseg's ``LoadAnnotations`` that rejects label maps with ids
outside the classes, several channels or the wrong size, and that does nothing for a sample without a
label file (an unlabelled split, or inference on a bare image). Both are registered in mmseg's
registries by ``import mmmila`` (``mmmila.registry.register_defaults``).
"""
from __future__ import annotations

import mmcv
from mmengine import fileio
from mmseg.datasets import ADE20KDataset
from mmseg.datasets.transforms import LoadAnnotations

from mmmila.datasets.ade_checks import check_label_map, check_labels_exist, check_split_dirs


class ADE20KCheckedDataset(ADE20KDataset):
    """ADE20K (150 classes, label 0 ignored) that fails early, and clearly, on missing files.

    Accepts the arguments of mmseg's ``ADE20KDataset``. On loading it checks that ``data_root``, the
    image folder and the label folder exist, that the split has images, and that every image has its
    label file. ``data_prefix=dict(img_path=..., seg_map_path=None)`` gives an unlabelled split, for
    test-time use only (e.g. writing the benchmark's PNGs with ``IoUMetric(format_only=True)``).

    Args:
        data_prefix (dict): ``img_path`` and ``seg_map_path`` folders, relative to ``data_root``;
            ``seg_map_path=None`` for an unlabelled split. Defaults to the ADE20K training split.
        **kwargs: the other arguments of ``ADE20KDataset`` (``data_root``, ``pipeline``, ...).
    """

    def __init__(self, data_prefix: dict | None = None, **kwargs) -> None:
        data_prefix = dict(data_prefix or dict(img_path='images/training',
                                               seg_map_path='annotations/training'))
        if 'img_path' not in data_prefix or data_prefix['img_path'] is None:
            raise ValueError(f'data_prefix needs an img_path folder, got {data_prefix}')
        self.labelled = data_prefix.get('seg_map_path') is not None
        if not self.labelled:
            data_prefix.pop('seg_map_path', None)
            if not kwargs.get('test_mode', False):
                raise ValueError('an unlabelled split (data_prefix seg_map_path=None) can only be used '
                                 'for testing (test_mode=True)')
        super().__init__(data_prefix=data_prefix, **kwargs)

    def load_data_list(self) -> list[dict]:
        """List the split's samples after checking its folders and label files."""
        img_dir = self.data_prefix['img_path']
        seg_dir = self.data_prefix.get('seg_map_path')
        check_split_dirs(self.data_root, img_dir, seg_dir)
        data_list = super().load_data_list()
        if not data_list:
            source = self.ann_file or img_dir
            raise FileNotFoundError(f'no {self.img_suffix} images found for {source!r}')
        if self.labelled:
            check_labels_exist([(info['img_path'], info['seg_map_path']) for info in data_list])
        return data_list


class LoadCheckedSegAnnotations(LoadAnnotations):
    """Load a label PNG as mmseg's ``LoadAnnotations`` does, after checking its content.

    The ids are checked against ``num_classes`` (with the sample's ``reduce_zero_label``), the map
    must be single-channel and, when the original image size is known (``ori_shape``), of that size.
    A sample without ``seg_map_path`` passes through unchanged.

    Args:
        num_classes (int): number of classes of the label files (150 for ADE20K).
        ignore_index (int): label value that is ignored. Defaults to 255.
        imdecode_backend (str): image decoding backend. Defaults to 'pillow'.
        backend_args (dict | None): file backend arguments. Defaults to None.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, imdecode_backend: str = 'pillow',
                 backend_args: dict | None = None) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be a positive int, got {num_classes!r}')
        super().__init__(reduce_zero_label=None, backend_args=backend_args,
                         imdecode_backend=imdecode_backend)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        """Add ``gt_seg_map`` (H, W) uint8 to ``results`` when the sample has a label file."""
        if results.get('seg_map_path') is None:
            return results
        return super().transform(results)

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        raw = mmcv.imfrombytes(fileio.get(path, backend_args=self.backend_args), flag='unchanged',
                               backend=self.imdecode_backend)
        if raw is None:
            raise ValueError(f'label file {path} could not be decoded as an image')
        labels = check_label_map(raw, path, self.num_classes, bool(results.get('reduce_zero_label')),
                                 self.ignore_index, results.get('ori_shape'))
        label_map = results.get('label_map')
        if label_map:
            mapped = labels.copy()
            for old_id, new_id in label_map.items():
                mapped[labels == old_id] = new_id
            labels = mapped
        results['gt_seg_map'] = labels
        results.setdefault('seg_fields', []).append('gt_seg_map')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index}, imdecode_backend={self.imdecode_backend!r})')

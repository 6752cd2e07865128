"""Pre-flight checks of a config's datasets and heads, run by the tools before the runner.

Missing dataset files (:class:`DatasetFileError`), annotation files that do not parse or
lack a field (:class:`AnnotationFileError`), listed images that are absent or not images
(:class:`ImageFileError`; :func:`image_read_error` when decoding fails later) and a box
head's ``num_classes`` unlike the dataset's (:class:`NumClassesMismatchError`) are errors
naming the file or config field. Boxes mmdet skips or clips and images without boxes give
one :class:`DatasetWarning` each, with the count and examples.
"""
import json
import logging
import os.path as osp
import re
import warnings
import xml.etree.ElementTree as ET

from .errors import (AnnotationFileError, DatasetFileError, DatasetWarning, ImageFileError,
                     NumClassesMismatchError)

SHOWN = 5
#: Boxes mmdet skips or clips, and the warning that counts them.
SKIPS = {'unknown_image': 'annotations refer to no listed image and are skipped; ids:',
         'outside': 'boxes lie entirely outside their image and are skipped:',
         'degenerate': 'boxes are smaller than 1 pixel (or area <= 0) and are skipped:',
         'other_class': "boxes belong to categories outside the dataset's classes and are "
                        'skipped:',
         'clipped': 'boxes extend beyond their image; they are clipped to it when resized '
                    '(Resize clip_object_border=True):'}
IMAGE_SIGNATURES = (b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'BM', b'GIF87a', b'GIF89a',
                    b'II*\x00', b'MM\x00*')


HOW_TO_GET = {
    'CocoDataset': (
        'COCO 2017 comes from https://cocodataset.org/#download (train2017.zip, '
        'val2017.zip, annotations_trainval2017.zip); unpack it as data/coco/'
        '{train2017,val2017,annotations} (README, section "Data").'),
    'VOCDataset': (
        'PASCAL VOC 2007 and 2012 come from http://host.robots.ox.ac.uk/pascal/VOC/ '
        '(VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar, '
        'VOCtrainval_11-May-2012.tar); unpack them as data/VOCdevkit/{VOC2007,VOC2012} '
        '(README, section "Data").'),
    'bccd': ('BCCD comes from https://github.com/Shenggan/BCCD_Dataset: git clone '
             'https://github.com/Shenggan/BCCD_Dataset data/bccd (README, section "Data").'),
    'neu-det': ('NEU-DET is the NEU surface defect database (Northeastern University): put it '
                'as data/neu-det/NEU-DET/{Annotations,JPEGImages} and write its split files '
                'ImageSets/Main/{trainval,test}.txt as docs/placement.md shows.'),
}


def _leaf_datasets(dataset_cfg, where):
    """(config path, dataset cfg) of the datasets that read files, through wrappers."""
    if dataset_cfg is None:
        return []
    if 'datasets' in dataset_cfg:  # ConcatDataset
        return [leaf for i, d in enumerate(dataset_cfg['datasets'])
                for leaf in _leaf_datasets(d, f'{where}.datasets[{i}]')]
    if 'dataset' in dataset_cfg:  # RepeatDataset, ClassBalancedDataset, ...
        return _leaf_datasets(dataset_cfg['dataset'], f'{where}.dataset')
    return [(where, dataset_cfg)]


def split_datasets(cfg, splits=('train', 'val', 'test')):
    """``(split, config path, dataset cfg)`` of every file-reading dataset of ``splits``."""
    return [(split, where, ds) for split in splits
            for where, ds in _leaf_datasets((cfg.get(f'{split}_dataloader') or {}).get(
                'dataset'), f'{split}_dataloader.dataset')]


def _join(root, path):
    return root if not path else path if osp.isabs(path) or not root else osp.join(root, path)


def dataset_paths(dataset_cfg):
    """The files and folders a dataset config needs: [(field, path, is_file)]."""
    root = dataset_cfg.get('data_root', '') or ''
    prefix = dataset_cfg.get('data_prefix', {}) or {}
    paths = []
    if dataset_cfg.get('ann_file'):
        paths.append(('ann_file', _join(root, dataset_cfg['ann_file']), True))
    if 'sub_data_root' in prefix:
        paths.append(('data_prefix.sub_data_root', _join(root, prefix['sub_data_root']),
                      False))
    for key in ('img', 'img_path'):
        if prefix.get(key):
            paths.append((f'data_prefix.{key}', _join(root, prefix[key]), False))
    return paths


def check_dataset_paths(cfg, splits=('train', 'val', 'test')):
    """Raise :class:`DatasetFileError` naming the first missing path, its config field and
    how to get the dataset."""
    for split, where, ds in split_datasets(cfg, splits):
        for field, path, is_file in dataset_paths(ds):
            if not (osp.isfile(path) if is_file else osp.isdir(path)):
                hint = next((h for k, h in HOW_TO_GET.items() if k in path.lower()),
                            HOW_TO_GET.get(ds.get('type', ''), ''))
                raise DatasetFileError(
                    f'{split} dataset: {"file" if is_file else "folder"} {path} '
                    f'({where}.{field}) does not exist. {hint} To use data elsewhere, set '
                    f'data_root with --cfg-options {where}.data_root=PATH.'.replace('  ', ' '))


def _dataset_class(type_name):
    from mmdet.registry import DATASETS
    if not isinstance(type_name, str):
        return type_name if isinstance(type_name, type) else None
    return DATASETS.get(type_name)


def _is_subclass(type_name, base_name):
    cls = _dataset_class(type_name)
    return cls is not None and any(c.__name__ == base_name for c in cls.__mro__)


def dataset_classes(dataset_cfg):
    """The class names a dataset config trains on: ``metainfo.classes`` if the config
    sets it, else the dataset type's own; None when unknown."""
    meta = dataset_cfg.get('metainfo') or {}
    if meta.get('classes'):
        return tuple(meta['classes'])
    cls = _dataset_class(dataset_cfg.get('type'))
    classes = getattr(cls, 'METAINFO', {}).get('classes') if cls is not None else None
    return tuple(classes) if classes else None


def _listing(items):
    more = f', ... ({len(items)} in all)' if len(items) > SHOWN else ''
    return ', '.join(map(str, items[:SHOWN])) + more


def _warn(message):
    warnings.warn(message, DatasetWarning, stacklevel=3)
    try:
        from mmengine.logging import print_log
        print_log(message, logger='current', level=logging.WARNING)
    except Exception:  # logging must never hide the check itself
        pass


def image_file_problem(path):
    """None if ``path`` looks like a readable image, else what is wrong with it."""
    try:
        size = osp.getsize(path)
    except OSError:
        return 'missing'
    if size == 0:
        return 'empty'
    with open(path, 'rb') as f:
        head = f.read(16)
    if head.startswith(IMAGE_SIGNATURES) or (head[:4] == b'RIFF' and head[8:12] == b'WEBP'):
        return None
    import cv2
    import numpy as np
    with open(path, 'rb') as f:
        data = np.frombuffer(f.read(), dtype=np.uint8)
    return None if cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is not None else 'not an image'


def check_image_files(paths, where):
    """Raise :class:`ImageFileError` listing the missing and unreadable images."""
    problems = {}
    for path in paths:
        problem = image_file_problem(path)
        if problem:
            problems.setdefault(problem, []).append(path)
    if problems:
        parts = [f'{len(v)} {k}: {_listing(v)}' for k, v in sorted(problems.items())]
        raise ImageFileError(f'{where}: {sum(map(len, problems.values()))} of {len(paths)} '
                             f'images listed by the annotations are not usable: '
                             + '; '.join(parts))


def load_coco_json(path, field):
    try:
        with open(path, 'rb') as f:
            data = json.loads(f.read().decode('utf-8'))
    except json.JSONDecodeError as e:
        raise AnnotationFileError(f'annotation file {path} ({field}) is not valid JSON: '
                                  f'{e.msg} at line {e.lineno}, column {e.colno}') from None
    except UnicodeDecodeError:
        raise AnnotationFileError(f'annotation file {path} ({field}) is not a UTF-8 JSON '
                                  'text file') from None
    if not isinstance(data, dict):
        raise AnnotationFileError(f'annotation file {path} ({field}): expected a COCO '
                                  f'JSON object, got a {type(data).__name__}')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise AnnotationFileError(f'annotation file {path} ({field}): no {key!r} list '
                                      f'(a COCO file has images, annotations, categories)')
    return data


def _require(entries, fields, path, what):
    for i, entry in enumerate(entries):
        absent = [f for f in fields if not isinstance(entry, dict) or f not in entry]
        if absent:
            ident = entry.get('id', '?') if isinstance(entry, dict) else '?'
            raise AnnotationFileError(f'annotation file {path}: {what}[{i}] (id {ident}) '
                                      f'lacks {absent}')


def check_coco_dataset(ds, where, check_images=True):
    """Check a CocoDataset config; returns a dict of counts (images, boxes, skipped...)."""
    root = ds.get('data_root', '') or ''
    path = _join(root, ds['ann_file'])
    field = f'{where}.ann_file'
    data = load_coco_json(path, field)
    _require(data['images'], ('id', 'file_name', 'width', 'height'), path, 'images')
    _require(data['annotations'], ('image_id', 'bbox', 'category_id', 'area'), path,
             'annotations')
    _require(data['categories'], ('id', 'name'), path, 'categories')
    for i, ann in enumerate(data['annotations']):
        bbox = ann['bbox']
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
                and all(isinstance(v, (int, float)) for v in bbox)):
            raise AnnotationFileError(f'annotation file {path}: annotations[{i}] (id '
                                      f'{ann.get("id", "?")}) has bbox {bbox!r}, expected '
                                      f'[x, y, width, height]')

    classes = dataset_classes(ds)
    names = {c['id']: c['name'] for c in data['categories']}
    if classes is not None:
        found = [c for c in classes if c in names.values()]
        if not found:
            raise AnnotationFileError(
                f'annotation file {path}: none of the dataset\'s {len(classes)} classes '
                f'({_listing(list(classes))}) is among its categories '
                f'({_listing(sorted(names.values()))}); set {where}.metainfo.classes')
        absent = [c for c in classes if c not in names.values()]
        if absent:
            _warn(f'{path}: {len(absent)} classes of the dataset are not among its '
                  f'categories: {_listing(absent)}')
        used_ids = {i for i, n in names.items() if n in classes}
    else:
        used_ids = set(names)

    images = {img['id']: img for img in data['images']}
    prefix = (ds.get('data_prefix') or {}).get('img', '') or ''
    img_dir = _join(root, prefix)
    if check_images:
        check_image_files([osp.join(img_dir, img['file_name']) for img in data['images']],
                          f'{where} ({path})')

    found = {kind: [] for kind in SKIPS}
    with_boxes = set()
    for ann in data['annotations']:
        img = images.get(ann['image_id'])
        if img is None and not ann.get('ignore', False):
            found['unknown_image'].append(ann.get('id', '?'))
        if img is None or ann.get('ignore', False):
            continue
        x, y, w, h = ann['bbox']
        example = f'{img["file_name"]} annotation {ann.get("id", "?")} bbox {ann["bbox"]}'
        if (max(0, min(x + w, img['width']) - max(x, 0))
                * max(0, min(y + h, img['height']) - max(y, 0))) == 0:
            found['outside'].append(example)
        elif ann['area'] <= 0 or w < 1 or h < 1:
            found['degenerate'].append(example)
        elif ann['category_id'] not in used_ids:
            found['other_class'].append(example)
        else:
            if x < 0 or y < 0 or x + w > img['width'] or y + h > img['height']:
                found['clipped'].append(example)
            with_boxes.add(img['id'])
    for kind, what in SKIPS.items():
        if found[kind]:
            _warn(f'{path}: {len(found[kind])} {what} {_listing(found[kind])}')

    empty = [img['file_name'] for i, img in images.items() if i not in with_boxes]
    filter_empty = bool((ds.get('filter_cfg') or {}).get('filter_empty_gt', False))
    if empty and not ds.get('test_mode', False):
        if filter_empty and len(empty) == len(images):
            raise AnnotationFileError(
                f'annotation file {path} ({field}): none of its {len(images)} images has a '
                f'usable box, and {where}.filter_cfg.filter_empty_gt=True skips images '
                f'without boxes: nothing left to train on')
        _warn(f'{path}: {len(empty)} of {len(images)} images have no usable box' + (
            f' and are skipped in training ({where}.filter_cfg.filter_empty_gt=True): '
            if filter_empty else f'; they are trained as background '
            f'({where}.filter_cfg.filter_empty_gt is not set): ') + _listing(empty))
    counts = {kind: len(v) for kind, v in found.items() if kind != 'unknown_image'}
    return dict(images=len(images), boxes=len(data['annotations']), empty_images=len(empty),
                **counts)


def check_voc_dataset(ds, where, check_images=True):
    """Check an XMLDataset (VOC) config: its image list, XML files and images."""
    root = ds.get('data_root', '') or ''
    list_file = _join(root, ds['ann_file'])
    sub_root = _join(root, (ds.get('data_prefix') or {}).get('sub_data_root', '') or '')
    img_subdir = ds.get('img_subdir', 'JPEGImages')
    ann_subdir = ds.get('ann_subdir', 'Annotations')
    with open(list_file) as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise AnnotationFileError(f'image list {list_file} ({where}.ann_file) is empty')
    problems = {}
    for img_id in ids:
        xml_path = osp.join(sub_root, ann_subdir, f'{img_id}.xml')
        try:
            ET.parse(xml_path)
        except FileNotFoundError:
            problems.setdefault('missing', []).append(xml_path)
        except ET.ParseError as e:
            problems.setdefault('not valid XML', []).append(f'{xml_path} ({e})')
    if problems:
        parts = [f'{len(v)} {k}: {_listing(v)}' for k, v in problems.items()]
        raise AnnotationFileError(f'{where}: of the {len(ids)} annotation files listed by '
                                  f'{list_file}, ' + '; '.join(parts))
    if check_images:
        check_image_files([osp.join(sub_root, img_subdir, f'{i}.jpg') for i in ids],
                          f'{where} ({list_file})')
    return dict(images=len(ids))


def validate_datasets(cfg, splits=('train', 'val', 'test'), check_images=True):
    """Check every COCO and VOC dataset of ``splits`` (others pass); ``{config path: counts}``."""
    report = {}
    for _, where, ds in split_datasets(cfg, splits):
        if ds.get('ann_file') and _is_subclass(ds.get('type'), 'CocoDataset'):
            report[where] = check_coco_dataset(ds, where, check_images)
        elif ds.get('ann_file') and _is_subclass(ds.get('type'), 'XMLDataset'):
            report[where] = check_voc_dataset(ds, where, check_images)
    return report


def head_num_classes(model_cfg):
    """``[(config field, num_classes)]`` of the model's box heads."""
    heads = (model_cfg.get('roi_head') or {}).get('bbox_head') or []
    heads = [heads] if isinstance(heads, dict) else heads
    fields = [(f'model.roi_head.bbox_head{f"[{i}]" if len(heads) > 1 else ""}', head)
              for i, head in enumerate(heads)] + [('model.bbox_head', model_cfg.get('bbox_head'))]
    return [(f'{field}.num_classes', head['num_classes']) for field, head in fields
            if isinstance(head, dict) and isinstance(head.get('num_classes'), int)]


def check_num_classes(cfg, splits=('train', 'val', 'test')):
    """Raise :class:`NumClassesMismatchError` when a box head's num_classes differs
    from the number of classes of a dataset of ``splits``."""
    heads = head_num_classes(cfg.get('model') or {})
    for split, where, ds in split_datasets(cfg, splits):
        classes = dataset_classes(ds)
        for field, n in heads:
            if classes is not None and n != len(classes):
                raise NumClassesMismatchError(
                    f'{field} is {n}, but the {split} dataset ({where}, {ds.get("type")}) '
                    f'has {len(classes)} classes ({_listing(list(classes))}): set '
                    f'--cfg-options {field}={len(classes)}, or {where}.metainfo.classes to '
                    f'the classes the model was built for')


FAILED_IMAGE = re.compile(r'failed to load image: (.+)$')


def image_read_error(error):
    """An :class:`ImageFileError` for mmcv's "failed to load image: PATH" assertion
    (an image that could not be decoded when read), else None."""
    match = FAILED_IMAGE.search(str(error))
    if isinstance(error, AssertionError) and match:
        return ImageFileError(f'image file {match.group(1).strip()} cannot be decoded (corrupt '
                              f'or not an image); remove it from the annotations or replace it')
    return None


def validate_config(cfg, splits):
    """All the pre-flight checks of this module (and the plugin types,
    :mod:`cbam_mmdet.engine.plugin_check`) for the datasets of ``splits``."""
    from ..engine.plugin_check import check_model_plugins
    check_model_plugins(cfg)
    check_dataset_paths(cfg, splits=splits)
    validate_datasets(cfg, splits=splits)
    check_num_classes(cfg, splits=splits)

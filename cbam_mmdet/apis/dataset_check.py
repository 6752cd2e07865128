"""Check a config's dataset paths before training or testing, with one clear error."""
import os.path as osp

from .errors import DatasetFileError

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
}


def _leaf_datasets(dataset_cfg, where):
    """(config path, dataset cfg) of the datasets that read files, through wrappers."""
    if dataset_cfg is None:
        return []
    if 'datasets' in dataset_cfg:  # ConcatDataset
        out = []
        for i, d in enumerate(dataset_cfg['datasets']):
            out += _leaf_datasets(d, f'{where}.datasets[{i}]')
        return out
    if 'dataset' in dataset_cfg:  # RepeatDataset, ClassBalancedDataset, ...
        return _leaf_datasets(dataset_cfg['dataset'], f'{where}.dataset')
    return [(where, dataset_cfg)]


def split_datasets(cfg, splits=('train', 'val', 'test')):
    """``(split, config path, dataset cfg)`` of every file-reading dataset of ``splits``."""
    return [(split, where, ds) for split in splits
            for where, ds in _leaf_datasets((cfg.get(f'{split}_dataloader') or {}).get(
                'dataset'), f'{split}_dataloader.dataset')]


def _join(root, path):
    if not path:
        return root
    return path if osp.isabs(path) or not root else osp.join(root, path)


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
                hint = HOW_TO_GET.get(ds.get('type', ''), '')
                raise DatasetFileError(
                    f'{split} dataset: {"file" if is_file else "folder"} {path} '
                    f'({where}.{field}) does not exist. {hint} To use data elsewhere, set '
                    f'data_root with --cfg-options {where}.data_root=PATH.'.replace('  ', ' '))

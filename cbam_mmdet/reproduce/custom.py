"""The ``custom`` preset: baseline vs SE vs CBAM on the user's own VOC-XML or COCO-JSON
dataset, each variant the BCCD ``mini`` config (Faster R-CNN R-50-FPN) with the dataset,
classes, image scale, schedule and backbone initialisation of the command line. The data
is checked before any training."""
import os.path as osp
import xml.etree.ElementTree as ET

from ..apis.errors import AnnotationFileError, DatasetFileError
from ..apis.input_validation import load_coco_json
from .presets import (COCO_METRICS, VOC_METRICS, Preset, iteration_budget, select_variants,
                      trio)

MINI = 'configs/mini/faster_rcnn_r50_bccd{}.py'
VOC_LAYOUT = 'a VOC folder has Annotations/, JPEGImages/ and ImageSets/Main/{trainval,test}.txt'


def _require(path, is_file, what):
    if not (osp.isfile(path) if is_file else osp.isdir(path)):
        raise DatasetFileError(f'{what} {path} does not exist')


def voc_classes(root):
    """The object names in the XML files of the trainval and test splits, sorted."""
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        _require(osp.join(root, sub), False, f'folder ({VOC_LAYOUT}):')
    names = set()
    for split in ('trainval', 'test'):
        path = osp.join(root, 'ImageSets', 'Main', f'{split}.txt')
        _require(path, True, f'split file ({VOC_LAYOUT}):')
        with open(path) as f:
            ids = [line.strip() for line in f if line.strip()]
        if not ids:
            raise AnnotationFileError(f'split {split}: {path} lists no images')
        for img_id in ids:
            xml = osp.join(root, 'Annotations', f'{img_id}.xml')
            _require(xml, True, f'annotation file of {split} image {img_id!r}:')
            try:
                names.update((n.text or '').strip() for n in ET.parse(xml).iterfind('object/name'))
            except ET.ParseError as e:
                raise AnnotationFileError(f'{xml} is not valid XML: {e}') from None
    return sorted(names - {''})


def coco_classes(root, train_ann, val_ann, img_dir):
    """The category names of the training annotation file, in category-id order."""
    _require(osp.join(root, img_dir), False, 'image folder')
    data = {}
    for split, ann in (('train', train_ann), ('val', val_ann)):
        _require(osp.join(root, ann), True, f'{split} annotation file')
        data[split] = load_coco_json(osp.join(root, ann), f'--{split}-ann')
        if not data[split]['images']:
            raise AnnotationFileError(f'split {split}: {osp.join(root, ann)} lists no images')
    return [c['name'] for c in sorted(data['train']['categories'], key=lambda c: c['id'])]


def _schedule(epochs, max_iters):
    if max_iters:
        return dict(iteration_budget(max_iters), **{
            'train_cfg': dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                              val_interval=max_iters),
            'default_hooks.checkpoint.by_epoch': False, 'log_processor.by_epoch': False})
    return {'train_cfg.max_epochs': epochs, 'train_cfg.val_interval': epochs,
            'default_hooks.checkpoint.interval': epochs, 'param_scheduler.1.end': epochs,
            'param_scheduler.1.milestones': [max(1, epochs * 3 // 4), max(1, epochs * 11 // 12)]}


def _datasets(args, root, classes):
    """Overrides of the mini config's train and test datasets (and the COCO evaluator)."""
    voc = args.format == 'voc'
    options = {} if voc else {'test_evaluator': dict(
        _delete_=True, type='CocoMetric', metric='bbox', ann_file=osp.join(root, args.val_ann))}
    for split, ann, resize_step in (('train', args.train_ann, 2), ('test', args.val_ann, 1)):
        ds = f'{split}_dataloader.dataset.'
        options.update({ds + 'type': 'VOCDataset' if voc else 'CocoDataset', ds + 'data_root': root,
                        ds + 'ann_file': f'ImageSets/Main/{split}{"val" * (split == "train")}.txt'
                        if voc else ann, ds + 'metainfo.classes': classes,
                        ds + 'data_prefix.sub_data_root': '',
                        ds + f'pipeline.{resize_step}.scale': (args.scale * 5 // 3, args.scale)})
        if not voc:
            options[ds + 'data_prefix.img'] = args.img_dir
    return options


def custom_preset(args):
    """The Preset of ``tools/reproduce.py --preset custom``: the chosen variants, classes
    read from the data (or ``--classes``, each of which must occur in it), the overrides."""
    root = osp.abspath(args.data_root or '')
    if not args.data_root or not osp.isdir(root):
        raise DatasetFileError(f'--preset custom needs --data-root, a dataset folder; got '
                               f'{args.data_root!r}')
    found = voc_classes(root) if args.format == 'voc' else coco_classes(
        root, args.train_ann, args.val_ann, args.img_dir)
    classes = [c.strip() for c in args.classes.split(',')] if args.classes else found
    absent = [c for c in classes if c not in found]
    if not classes or absent:
        where = 'XML files' if args.format == 'voc' else 'training categories'
        raise AnnotationFileError(f'classes {absent} do not occur in the {where} (found: '
                                  f'{found})' if absent else f'no classes in the {where}')
    checkpoint = args.backbone_checkpoint and osp.abspath(args.backbone_checkpoint)
    if checkpoint and not osp.isfile(checkpoint):
        raise DatasetFileError(f'--backbone-checkpoint {checkpoint} does not exist')
    options = dict(_datasets(args, root, classes), **_schedule(args.epochs, args.max_iters), **{
        'model.roi_head.bbox_head.num_classes': len(classes),
        'model.backbone.init_cfg': checkpoint and dict(type='Pretrained', checkpoint=checkpoint),
        'optim_wrapper': dict(_delete_=True, type='OptimWrapper', clip_grad=dict(max_norm=35),
                              optimizer=dict(type='SGD', lr=0.02, momentum=0.9,
                                             weight_decay=0.0001))})  # --amp: mixed precision
    budget = f'{args.max_iters} iterations' if args.max_iters else f'{args.epochs} epochs'
    return Preset(
        name='custom', options=options,
        variants=tuple(select_variants(Preset('', '', trio(MINI), {}, (), ''), args.variants)),
        description=f'Faster R-CNN R-50-FPN on {args.data_root} ({args.format}, '
                    f'{len(classes)} classes: {", ".join(classes)}), shorter side '
                    f'{args.scale}, {budget}, ' + (f'backbone from {args.backbone_checkpoint}'
                                                    if checkpoint else 'from scratch'),
        metrics=VOC_METRICS if args.format == 'voc' else COCO_METRICS,
        input_shape=(3, args.scale, args.scale * 5 // 3), metric_note=(
            'VOCMetric area AP on the test split: mAP is the mean over IoU .50:.05:.95, '
            'mAP50/mAP75 at IoU .5/.75.' if args.format == 'voc' else
            'COCO mAP@[.5:.95], mAP@.5, mAP@.75 on the validation annotations.'))

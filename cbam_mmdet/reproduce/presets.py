"""The comparisons ``tools/reproduce.py`` runs: :data:`PRESETS` of variants (configs) with
the paper's numbers where it has them, and the options that select and size them."""
import os.path as osp
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

COLUMNS = ('mAP', 'mAP50', 'mAP75')
COCO_METRICS = {'mAP': 'coco/bbox_mAP', 'mAP50': 'coco/bbox_mAP_50', 'mAP75': 'coco/bbox_mAP_75'}
VOC_METRICS = {'mAP': 'pascal_voc/mAP', 'mAP50': 'pascal_voc/AP50', 'mAP75': 'pascal_voc/AP75'}


@dataclass(frozen=True)
class Variant:
    """One row: a config and the paper's numbers for it (percent) where it has them;
    ``paper['delta']`` overrides the paper delta against the first row."""
    name: str
    config: str
    paper: Optional[Dict[str, float]] = None


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    variants: Tuple[Variant, ...]
    metrics: Dict[str, str]
    input_shape: Tuple[int, int, int]  # (C, H, W) of the GFLOPs count
    metric_note: str
    runs_here: bool = True  # False: print distributed commands unless --run
    iteration_based: bool = False  # True: --max-iters rescales the schedule
    parallel: int = 1  # variants run at the same time by default
    gpus: int = 8  # GPUs per run in the printed distributed commands
    paper_note: str = ''
    options: Optional[dict] = None  # config overrides of every variant


def _demo(name):
    return f'configs/demo/faster_rcnn_r50_shapes{name}.py'


def trio(config, baseline=None, se=None, cbam=None):
    """Variants baseline / SE / CBAM of ``config`` ('{}': '', '_se', '_cbam'), paper numbers."""
    return tuple(Variant(name, config.format(suffix), paper) for name, suffix, paper in (
        ('baseline', '', baseline), ('SE', '_se', se), ('CBAM', '_cbam', cbam)))


#: where CBAM goes in the placement studies: (variant, config suffix); docs/placement.md
PLACEMENTS = (('baseline', ''), ('stem', '_cbam_stem'), ('stage inputs', '_cbam_stage_inputs'),
              ('after_conv1', '_cbam_after_conv1'), ('after_conv2', '_cbam_after_conv2'),
              ('block end (paper)', '_cbam'), ('backbone outputs', '_cbam_backbone_outputs'),
              ('after neck', '_cbam_neck'), ('stem + block end', '_cbam_stem_block_end'),
              ('stem + neck', '_cbam_stem_neck'),
              ('stage inputs + block end', '_cbam_stage_inputs_block_end'))


def placements(config):
    """The :data:`PLACEMENTS` variants of ``config`` ('{}': the suffix)."""
    return tuple(Variant(name, config.format(suffix)) for name, suffix in PLACEMENTS)


_COCO_NOTE = 'COCO mAP@[.5:.95], mAP@.5, mAP@.75 on val2017.'
_VOC_NOTE = "VOC2007 test 11-point mAP at IoU .5 (mmdet's VOCMetric)."
_NEU_NOTE = ('VOCMetric area AP on the NEU-DET test split (ids 241-300 of each class, 360 '
             'images): mAP is the mean over IoU .50:.05:.95, mAP50/mAP75 at IoU .5/.75.')
_SHAPES_NOTE = ('COCO mAP@[.5:.95] (CocoMetric) on 128 held-out scenes (seed 1) of the embedded '
                'SyntheticShapesDataset, 128x128; trained from scratch on 512 scenes (seed 0).')

PRESETS = {p.name: p for p in [
    Preset(name='demo',
        description='baseline vs SE vs CBAM, Faster R-CNN R-50-FPN (narrow, from scratch) '
                    'on the embedded shapes dataset',
        variants=trio(_demo('{}')),
        metrics=COCO_METRICS, input_shape=(3, 128, 128), metric_note=_SHAPES_NOTE,
        iteration_based=True),
    Preset(name='placement',
        description='where CBAM goes: before the blocks (stem, stage inputs), inside them '
                    '(after conv1, conv2), after them (block end: the paper; backbone '
                    'outputs; after the neck) or both; embedded shapes dataset, CPU',
        variants=placements(_demo('{}')),
        metrics=COCO_METRICS, input_shape=(3, 128, 128), metric_note=_SHAPES_NOTE,
        iteration_based=True),
    Preset(name='mini',
        description='baseline vs SE vs CBAM, Faster R-CNN R-50-FPN from scratch on BCCD '
                    '(640x480, fp16 AMP, 18 epochs), one GPU, three runs sharing it',
        variants=trio('configs/mini/faster_rcnn_r50_bccd{}.py'),
        metrics=VOC_METRICS, input_shape=(3, 480, 640), parallel=3,
        metric_note='VOCMetric area AP on the BCCD test split (72 images): mAP is the '
                    'mean over IoU .50:.05:.95, mAP50/mAP75 at IoU .5/.75.'),
    Preset(name='neu',
        description='baseline vs SE vs CBAM, Faster R-CNN R-50-FPN from scratch on NEU-DET '
                    '(320x320, fp16 AMP, 6 epochs), one GPU, three runs sharing it',
        variants=trio('configs/neu/faster_rcnn_r50_neu{}.py'),
        metrics=VOC_METRICS, input_shape=(3, 320, 320), parallel=3, metric_note=_NEU_NOTE),
    Preset(name='placement-neu',
        description='the placement study on NEU-DET: Faster R-CNN R-50-FPN from scratch '
                    '(320x320, fp16 AMP, 6 epochs), one GPU, five runs sharing it',
        variants=placements('configs/neu/faster_rcnn_r50_neu{}.py'),
        metrics=VOC_METRICS, input_shape=(3, 320, 320), parallel=5, metric_note=_NEU_NOTE),
    Preset(name='coco-r50',
        description='Faster R-CNN R-50-FPN 1x on COCO 2017 (train2017 -> val2017), '
                    'baseline vs SE vs CBAM, ImageNet-pretrained backbones',
        variants=trio('configs/faster_rcnn_r50{}_coco.py',
                       baseline=dict(mAP=27.0, mAP50=46.2, mAP75=28.1),
                       cbam=dict(mAP=28.1, mAP50=48.2, mAP75=29.2)),
        metrics=COCO_METRICS, input_shape=(3, 800, 1333), runs_here=False, metric_note=_COCO_NOTE,
        paper_note='Paper: Woo et al. 2018, Table 6 (COCO, Faster R-CNN, ResNet-50). The paper\'s '
                   'detector is not mmdet\'s FPN (mmdet R50-FPN 1x reaches 37.4): compare deltas.'),
    Preset(name='coco-r101',
        description='Faster R-CNN R-101-FPN 1x on COCO 2017 (train2017 -> val2017), '
                    'baseline vs SE vs CBAM, ImageNet-pretrained backbones',
        variants=trio('configs/faster_rcnn_r101{}_coco.py',
                       baseline=dict(mAP=29.1, mAP50=48.4, mAP75=30.7),
                       cbam=dict(mAP=30.8, mAP50=50.5, mAP75=32.6)),
        metrics=COCO_METRICS, input_shape=(3, 800, 1333), runs_here=False, metric_note=_COCO_NOTE,
        paper_note='Paper: Woo et al. 2018, Table 6 (COCO, Faster R-CNN, ResNet-101). '
                   'The paper\'s detector is not mmdet\'s FPN: compare deltas.'),
    Preset(name='coco-c4-r50',
        description="Faster R-CNN R-50-C4 on COCO 2017 (train2017 -> val2017), the paper's "
                    'detector and schedule (tf-faster-rcnn), baseline vs SE vs CBAM, '
                    'ImageNet attention backbones',
        variants=trio('configs/faster_rcnn_r50_c4{}_coco.py',
                       baseline=dict(mAP=27.0, mAP50=46.2, mAP75=28.1),
                       cbam=dict(mAP=28.1, mAP50=48.2, mAP75=29.2)),
        metrics=COCO_METRICS, input_shape=(3, 600, 1000), runs_here=False, metric_note=_COCO_NOTE,
        paper_note='Paper: Woo et al. 2018, Table 6 (COCO minival, Faster R-CNN ResNet-50, '
                   'tf-faster-rcnn: C4, 600/1000 px, 490k images). train2017/val2017 are '
                   '2014 trainval35k/minival. No SE row in the paper.'),
    Preset(name='coco-c4-r101',
        description="Faster R-CNN R-101-C4 on COCO 2017 (train2017 -> val2017), the paper's "
                    'detector and schedule (tf-faster-rcnn), baseline vs SE vs CBAM, '
                    'ImageNet attention backbones',
        variants=trio('configs/faster_rcnn_r101_c4{}_coco.py',
                       baseline=dict(mAP=29.1, mAP50=48.4, mAP75=30.7),
                       cbam=dict(mAP=30.8, mAP50=50.5, mAP75=32.6)),
        metrics=COCO_METRICS, input_shape=(3, 600, 1000), runs_here=False, metric_note=_COCO_NOTE,
        paper_note='Paper: Woo et al. 2018, Table 6 (COCO minival, Faster R-CNN ResNet-101, '
                   'tf-faster-rcnn: C4, 600/1000 px, 490k images). train2017/val2017 are '
                   '2014 trainval35k/minival. No SE row in the paper.'),
    Preset(name='voc-frcnn',
        description='Faster R-CNN R-50-FPN on PASCAL VOC (07+12 trainval -> 07 test)',
        variants=trio('configs/faster_rcnn_r50{}_voc0712.py'),
        metrics={'mAP': 'pascal_voc/mAP'}, input_shape=(3, 600, 1000), runs_here=False,
        metric_note=_VOC_NOTE, paper_note='The paper has no Faster R-CNN VOC table.'),
    Preset(name='voc-ssd',
        description='SSD300 VGG16 on PASCAL VOC (07+12 trainval -> 07 test), attention on '
                    'every detection feature level: baseline vs SE vs CBAM',
        variants=trio('configs/ssd300_vgg16{}_voc0712.py', baseline=dict(mAP=77.8),
                       se=dict(mAP=79.1, delta=0.2), cbam=dict(mAP=79.3, delta=0.4)),
        metrics={'mAP': 'pascal_voc/mAP'}, input_shape=(3, 300, 300), runs_here=False,
        metric_note=_VOC_NOTE,
        paper_note='Paper: Woo et al. 2018, Table 7 (VOC2007 test, VGG16): SSD 77.8; its '
                   'SE and CBAM rows are on StairNet (78.9): StairNet+SE 79.1, '
                   'StairNet+CBAM 79.3, so the paper deltas are against StairNet.'),
    Preset(name='voc-stairnet',
        description='StairNet300 VGG16 on PASCAL VOC (07+12 trainval -> 07 test), attention '
                    'right before every classifier: baseline vs SE vs CBAM',
        variants=trio('configs/stairnet300_vgg16{}_voc0712.py', baseline=dict(mAP=78.9),
                       se=dict(mAP=79.1), cbam=dict(mAP=79.3)),
        metrics={'mAP': 'pascal_voc/mAP'}, input_shape=(3, 300, 300), runs_here=False,
        metric_note=_VOC_NOTE,
        paper_note='Paper: Woo et al. 2018, Table 7 (VOC2007 test, VGG16, 300x300): StairNet '
                   '78.9 (32.0M params), StairNet+SE 79.1 (32.1M), StairNet+CBAM 79.3 '
                   '(32.1M). The detector: docs/paper_detectors.md.'),
]}


def iteration_budget(max_iters):
    """cfg options: a budget of ``max_iters`` iterations, the demo schedule rescaled to it."""
    return {'train_cfg.max_iters': max_iters, 'train_cfg.val_interval': max_iters,
            'default_hooks.checkpoint.interval': max_iters,
            'default_hooks.logger.interval': max(1, min(10, max_iters // 5)),
            'param_scheduler': [
                dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
                     end=min(50, max_iters)),
                dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
                     milestones=[max(1, int(max_iters * 0.8))], gamma=0.1)]}


def select_variants(preset, names=None):
    """The preset's variants, or those named (comma-separated or a list, any case)."""
    if not names:
        return list(preset.variants)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(',') if n.strip()]
    known = {v.name.lower(): v for v in preset.variants}
    unknown = [n for n in names if n.lower() not in known]
    if unknown:
        raise ValueError(f'--variants: unknown variant(s) {unknown} for preset '
                         f'{preset.name!r}; allowed: {[v.name for v in preset.variants]}')
    return [known[n.lower()] for n in names]


def variant_dir(work_dir, variant, seed):
    """``WORK_DIR/<variant name, spaces and symbols as '_'>/seed<seed>``."""
    name = re.sub(r'[^A-Za-z0-9_.-]+', '_', variant.name).strip('_')
    return osp.join(work_dir, name, f'seed{seed}')


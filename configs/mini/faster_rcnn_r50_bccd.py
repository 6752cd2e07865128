# The GPU mini study's baseline: Faster R-CNN R-50-FPN trained from scratch on BCCD
# (blood-cell microscopy, 3 classes, dense small boxes), trainval 292 images -> test 72,
# 640x480, batch 8, fp16 AMP (mmcv's RoIAlign has no bf16 kernel), 18 epochs.
# From scratch: no pretrained weights, BN layers in training mode. Evaluated with
# VOCMetric's area AP at IoU .50:.05:.95 ('pascal_voc/mAP' is their mean, COCO-style),
# and AP50/AP75 among them. The SE and CBAM variants differ only by the plugin.
_base_ = '../faster_rcnn_r50_coco.py'

# BCCD as distributed (BCCD/Annotations, BCCD/ImageSets/Main, BCCD/JPEGImages) under data/bccd/
data_root = 'data/bccd/'
classes = ('RBC', 'WBC', 'Platelets')
max_epochs = 18

model = dict(
    backbone=dict(norm_eval=False, init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=len(classes))))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(640, 480), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(640, 480), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=4, persistent_workers=True,
    dataset=dict(
        _delete_=True, type='VOCDataset', data_root=data_root,
        ann_file='BCCD/ImageSets/Main/trainval.txt', data_prefix=dict(sub_data_root='BCCD/'),
        metainfo=dict(classes=classes),
        # bbox_min_size: the dataset's degenerate boxes are ignored, not learnt
        filter_cfg=dict(filter_empty_gt=True, min_size=32, bbox_min_size=1),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=4, persistent_workers=True,
    dataset=dict(
        _delete_=True, type='VOCDataset', data_root=data_root,
        ann_file='BCCD/ImageSets/Main/test.txt', data_prefix=dict(sub_data_root='BCCD/'),
        metainfo=dict(classes=classes), test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True, type='VOCMetric', metric='mAP', eval_mode='area',
    iou_thrs=[round(0.5 + 0.05 * i, 2) for i in range(10)])
test_evaluator = val_evaluator

# validation at the end only (tools/reproduce.py skips it: it tests right after)
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs,
         milestones=[14, 17], gamma=0.1),
]
optim_wrapper = dict(
    type='AmpOptimWrapper', loss_scale='dynamic',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs))
randomness = dict(seed=0)

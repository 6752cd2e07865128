# The NEU-DET studies' baseline (presets neu and placement-neu): Faster R-CNN R-50-FPN
# trained from scratch on one GPU on NEU-DET, hot-rolled steel surface defects (6 classes,
# 300 grey 200x200 images each, VOC XML). Split: ids 1-240 of each class train (1,440
# images), ids 241-300 test (360), in NEU-DET/ImageSets/Main/{trainval,test}.txt
# (docs/placement.md writes them for a copy without). 200x200 upscaled to 320x320, batch 16,
# fp16 AMP (mmcv's RoIAlign has no bf16 kernel), 6 epochs (540 iterations). From scratch: no
# pretrained weights, BN layers in training mode. Evaluated as the mini study: VOCMetric area
# AP at IoU .50:.05:.95 ('pascal_voc/mAP', their mean), AP50 and AP75 among them.
_base_ = '../faster_rcnn_r50_coco.py'

# NEU-DET/{Annotations,ImageSets/Main,JPEGImages} under data/neu-det/
data_root = 'data/neu-det/'
classes = ('crazing', 'inclusion', 'patches', 'pitted_surface', 'rolled-in_scale',
           'scratches')
max_epochs = 6
img_scale = (320, 320)

model = dict(
    backbone=dict(norm_eval=False, init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=len(classes))))

# The boxes are in the XML's 200x200 grid. Some public copies ship the images upscaled
# (416x416); the first Resize, before the boxes are loaded, brings any copy to that grid
# (a no-op at 200x200), so the boxes and the test's rescaling stay right.
to_annotated_grid = dict(type='Resize', scale=(200, 200), keep_ratio=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    to_annotated_grid,
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    to_annotated_grid,
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
train_dataloader = dict(
    batch_size=16, num_workers=2, persistent_workers=True,
    dataset=dict(
        _delete_=True, type='VOCDataset', data_root=data_root,
        ann_file='NEU-DET/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root='NEU-DET/'), metainfo=dict(classes=classes),
        filter_cfg=dict(filter_empty_gt=True, min_size=32, bbox_min_size=1),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=2, persistent_workers=True,
    dataset=dict(
        _delete_=True, type='VOCDataset', data_root=data_root,
        ann_file='NEU-DET/ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root='NEU-DET/'), metainfo=dict(classes=classes),
        test_mode=True, pipeline=test_pipeline))
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
         milestones=[5], gamma=0.1),
]
optim_wrapper = dict(
    type='AmpOptimWrapper', loss_scale='dynamic',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs))
randomness = dict(seed=0)

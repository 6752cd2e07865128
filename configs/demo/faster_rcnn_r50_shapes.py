# The CPU demo's baseline: Faster R-CNN R-50-FPN, narrow and trained from scratch on the
# embedded SyntheticShapesDataset (128x128 images, nothing downloaded).
# Changes from ../faster_rcnn_r50_coco.py, all about size and speed: ResNet-50 with
# base_channels=16 (stage outputs 64/128/256/512 instead of 256..2048), FPN and heads at
# 64 channels, 256-d box-head FCs, anchors scaled to the 10-48 px objects (scales=[4]),
# fewer proposals and RoI samples, no pretrained weights (BN in training mode), 3 classes,
# an iteration-based schedule. The SE and CBAM variants differ from it only by the plugin.
_base_ = '../faster_rcnn_r50_coco.py'

max_iters = 300
img_size = 128
scene_cfg = dict(height=img_size, width=img_size, min_size=10, max_size=48)

model = dict(
    backbone=dict(base_channels=16, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))

train_pipeline = [
    dict(type='LoadImageFromNDArray'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromNDArray'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    # 'instances' carries the ground truth to CocoMetric(ann_file=None)
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor', 'instances')),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='SyntheticShapesDataset', num_images=512, seed=0,
                 scene_cfg=scene_cfg, filter_cfg=dict(filter_empty_gt=True),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='SyntheticShapesDataset', num_images=128, seed=1,
                 scene_cfg=scene_cfg, test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='CocoMetric', ann_file=None, metric='bbox')
test_evaluator = val_evaluator

# tools/reproduce.py --max-iters N rescales this schedule (cbam_mmdet.reproduce.iteration_budget)
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.8)], gamma=0.1),
]
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=10, norm_type=2))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters))
log_processor = dict(by_epoch=False, window_size=10)
randomness = dict(seed=0)

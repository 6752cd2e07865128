# Faster R-CNN R-50-C4 on COCO: the detector of the CBAM paper's Table 6, Chen and Gupta's
# tf-faster-rcnn (arXiv 1702.02138) expressed on mmdet's C4 pieces. ResNet conv1-conv4
# (stride 16) is shared by the RPN and the box head; every RoI is cropped to 7x7 on conv4
# and run through conv5 at stride 1 (the shared head), averaged and classified.
# Train on COCO 2017 train (= 2014 trainval35k), test on val2017 (= 2014 minival).
# Protocol, mapping and deviations: docs/paper_detectors.md.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco.py'
custom_imports = dict(imports=['cbam_mmdet'], allow_failed_imports=False)

# style='pytorch' (stride in the 3x3 conv) and torchvision's RGB normalisation: the layout
# and input of the ImageNet checkpoints used here (torchvision, the official CBAM code,
# timm's SE-ResNets); mmdet's C4 config uses caffe-style weights. BN frozen everywhere
# (norm_cfg requires_grad=False, norm_eval) and conv1 + layer1 fixed (frozen_stages=1):
# tf-faster-rcnn's BN_TRAIN=False, FIXED_BLOCKS=1. The same file initialises the backbone
# (conv1-conv4) and the shared head (its layer4.* keys).
pretrained_backbone = 'torchvision://resnet50'
model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True),
    backbone=dict(style='pytorch', frozen_stages=1, norm_eval=True,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone)),
    rpn_head=dict(
        feat_channels=512,  # RPN_CHANNELS
        anchor_generator=dict(scales=[4, 8, 16, 32], ratios=[0.5, 1.0, 2.0], strides=[16]),
        loss_bbox=dict(_delete_=True, type='SmoothL1Loss', beta=1.0 / 9, loss_weight=1.0)),
    roi_head=dict(
        shared_head=dict(type='PluginResLayer', style='pytorch', stride=1,
                         init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone)),
        bbox_roi_extractor=dict(roi_layer=dict(output_size=7)),  # POOLING_SIZE, no max pool
        bbox_head=dict(
            roi_feat_size=7,
            loss_bbox=dict(_delete_=True, type='SmoothL1Loss', beta=1.0, loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(allowed_border=0),  # anchors crossing the image border are ignored
        rcnn=dict(sampler=dict(num=256, pos_fraction=0.25, add_gt_as_proposals=False))),
    test_cfg=dict(rpn=dict(nms_pre=6000, max_per_img=300),
                  rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.3),
                            max_per_img=100)))

# One scale: shorter side 600, longer side at most 1000; horizontal flips in training.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1000, 600), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1000, 600), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# tf-faster-rcnn on COCO: 490k iterations of 1 image at lr 0.001, x0.1 at 350k. Here 16
# images per iteration (8 GPUs x 2): 490,000 / 16 = 30,625 iterations, the step at
# 350,000 / 16 = 21,875, lr scaled linearly 0.001 x 16 = 0.016. Momentum 0.9, weight
# decay 1e-4, biases at 2x lr and no decay (DOUBLE_BIAS, BIAS_DECAY=False). The 500-iter
# linear warmup is mmdet's (tf-faster-rcnn has none at batch 1). Other GPU counts:
# --auto-scale-lr scales the lr to the real batch (base_batch_size=16), not the iterations.
max_iters = 30625
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[21875],
         gamma=0.1),
]
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.016, momentum=0.9, weight_decay=0.0001),
    paramwise_cfg=dict(bias_lr_mult=2.0, bias_decay_mult=0.0))
auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='FrozenAttentionCheckHook')]

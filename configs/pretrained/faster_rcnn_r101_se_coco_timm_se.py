# Faster R-CNN R-101-FPN + SE on COCO from timm's ImageNet seresnet101 weights, converted by
#   python tools/convert_timm_seresnet.py seresnet101.pth checkpoints/seresnet101_mmdet.pth
_base_ = '../faster_rcnn_r101_se_coco.py'
pretrained_backbone = 'checkpoints/seresnet101_mmdet.pth'
model = dict(backbone=dict(
    frozen_stages=1,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone)))

# Faster R-CNN R-50-FPN + SE on COCO, the backbone (SE included) started from timm's
# ImageNet seresnet50 weights, converted by
#   python tools/convert_timm_seresnet.py seresnet50.pth checkpoints/seresnet50_mmdet.pth
# (timm's SE hidden size is C/16 in every stage of seresnet50: ratio 16.)
_base_ = '../faster_rcnn_r50_se_coco.py'
pretrained_backbone = 'checkpoints/seresnet50_mmdet.pth'
model = dict(backbone=dict(
    frozen_stages=1,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone)))

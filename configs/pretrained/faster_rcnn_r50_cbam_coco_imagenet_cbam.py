# Faster R-CNN R-50-FPN + CBAM on COCO, the backbone (CBAM included) started from the
# official ResNet-50 + CBAM ImageNet checkpoint (Jongchan/attention-module), converted by
#   python tools/convert_official_cbam.py RESNET50_CBAM.pth checkpoints/resnet50_cbam_mmdet.pth
# The plugins are pretrained, so mmdet's default frozen_stages=1 applies again
# (FrozenAttentionCheckHook accepts frozen plugins whose weights are in this file).
_base_ = '../faster_rcnn_r50_cbam_coco.py'
pretrained_backbone = 'checkpoints/resnet50_cbam_mmdet.pth'
model = dict(backbone=dict(
    frozen_stages=1,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone)))

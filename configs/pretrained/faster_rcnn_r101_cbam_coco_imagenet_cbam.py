# Faster R-CNN R-101-FPN + CBAM on COCO from the official ResNet-101 + CBAM ImageNet
# checkpoint, converted by
#   python tools/convert_official_cbam.py RESNET101_CBAM.pth checkpoints/resnet101_cbam_mmdet.pth
_base_ = '../faster_rcnn_r101_cbam_coco.py'
pretrained_backbone = 'checkpoints/resnet101_cbam_mmdet.pth'
model = dict(backbone=dict(
    frozen_stages=1,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone)))

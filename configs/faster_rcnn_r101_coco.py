# Faster R-CNN R-101-FPN 1x on COCO: baseline of the paper's ResNet-101 comparison.
_base_ = './faster_rcnn_r50_coco.py'
model = dict(backbone=dict(
    depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))

# Faster R-CNN R-101-C4 on COCO: the baseline of Table 6's ResNet-101 rows
# (torchvision's ImageNet ResNet-101 in the backbone and the conv5 shared head).
_base_ = './faster_rcnn_r50_c4_coco.py'
pretrained_backbone = 'torchvision://resnet101'
model = dict(
    backbone=dict(depth=101,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone)),
    roi_head=dict(shared_head=dict(
        depth=101, init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone))))

# Faster R-CNN R-34-FPN + CBAM on COCO from the official ResNet-34 + CBAM ImageNet
# checkpoint, converted by
#   python tools/convert_official_cbam.py RESNET34_CBAM.pth checkpoints/resnet34_cbam_mmdet.pth
_base_ = './faster_rcnn_r18_cbam_coco_imagenet_cbam.py'
pretrained_backbone = 'checkpoints/resnet34_cbam_mmdet.pth'
model = dict(backbone=dict(
    depth=34, init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone)))

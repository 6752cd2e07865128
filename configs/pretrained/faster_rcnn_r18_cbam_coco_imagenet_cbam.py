# Faster R-CNN R-18-FPN + CBAM on COCO from the official ResNet-18 + CBAM ImageNet
# checkpoint, converted by
#   python tools/convert_official_cbam.py RESNET18_CBAM.pth checkpoints/resnet18_cbam_mmdet.pth
# mmdet's BasicBlock takes no plugins: PluginResNet's does; CBAM goes after_conv2, the end
# of the BasicBlock's residual branch (where the official code has it).
_base_ = '../faster_rcnn_r50_coco.py'
pretrained_backbone = 'checkpoints/resnet18_cbam_mmdet.pth'
model = dict(
    backbone=dict(
        type='PluginResNet',
        depth=18,
        frozen_stages=1,
        plugins=[dict(cfg=dict(type='CBAM', ratio=16), position='after_conv2')],
        init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone)),
    neck=dict(in_channels=[64, 128, 256, 512]))

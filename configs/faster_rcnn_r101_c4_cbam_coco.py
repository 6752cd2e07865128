# + CBAM (r=16, after conv3, before the residual addition) in every block, as in the paper:
# the backbone's conv2-conv4 and the conv5 shared head, 30 + 3 = 33 modules. Started from the
# official ResNet-101 + CBAM ImageNet checkpoint (Jongchan/attention-module), converted by
#   python tools/convert_official_cbam.py RESNET101_CBAM.pth checkpoints/resnet101_cbam_mmdet.pth
# The file initialises the backbone and the shared head; the layer1 plugins are fixed with
# layer1 (frozen_stages=1), which FrozenAttentionCheckHook accepts as they are in the file.
# Another path: --cfg-options model.backbone.init_cfg.checkpoint=PATH
#   model.roi_head.shared_head.init_cfg.checkpoint=PATH
_base_ = './faster_rcnn_r101_c4_coco.py'
pretrained_backbone = 'checkpoints/resnet101_cbam_mmdet.pth'
plugins = [dict(cfg=dict(type='CBAM', ratio=16), position='after_conv3')]
model = dict(
    backbone=dict(plugins=plugins,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone)),
    roi_head=dict(shared_head=dict(
        plugins=plugins, init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone))))

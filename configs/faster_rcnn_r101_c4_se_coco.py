# + SE (r=16, after conv3, before the residual addition) in every block: the backbone's
# conv2-conv4 and the conv5 shared head, 30 + 3 = 33 modules. Started from timm's ImageNet
# seresnet101 (SE hidden size C/16 in every stage), converted by
#   python tools/convert_timm_seresnet.py seresnet101.pth checkpoints/seresnet101_mmdet.pth
# The file initialises the backbone and the shared head; the layer1 plugins are fixed with
# layer1 (frozen_stages=1), which FrozenAttentionCheckHook accepts as they are in the file.
# Another path: --cfg-options model.backbone.init_cfg.checkpoint=PATH
#   model.roi_head.shared_head.init_cfg.checkpoint=PATH
_base_ = './faster_rcnn_r101_c4_coco.py'
pretrained_backbone = 'checkpoints/seresnet101_mmdet.pth'
plugins = [dict(cfg=dict(type='SE', ratio=16), position='after_conv3')]
model = dict(
    backbone=dict(plugins=plugins,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone)),
    roi_head=dict(shared_head=dict(
        plugins=plugins, init_cfg=dict(type='Pretrained', checkpoint=pretrained_backbone))))

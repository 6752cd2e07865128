# SSD300 VGG16 on PASCAL VOC (train VOC07+12 trainval, test VOC2007 test, 11-point
# mAP@0.5): mmdet's config, the baseline of the CBAM paper's VOC detection table.
_base_ = 'mmdet::pascal_voc/ssd300_voc0712.py'
custom_imports = dict(imports=['cbam_mmdet'], allow_failed_imports=False)
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='CheckInvalidLossHook', interval=50, priority='VERY_LOW'),
    dict(type='FrozenAttentionCheckHook'),
]

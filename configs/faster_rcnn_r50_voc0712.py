# Faster R-CNN R-50-FPN on PASCAL VOC: train VOC07+12 trainval, test VOC2007 test,
# 11-point mAP@0.5 (mmdet's voc0712 dataset config, VOCMetric eval_mode='11points').
# As the COCO configs: every backbone stage trainable (frozen_stages=0) so the SE and
# CBAM variants, which put a plugin in every block, differ from it only by the plugin.
_base_ = 'mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py'
custom_imports = dict(imports=['cbam_mmdet'], allow_failed_imports=False)
model = dict(backbone=dict(frozen_stages=0))
custom_hooks = [dict(type='FrozenAttentionCheckHook')]

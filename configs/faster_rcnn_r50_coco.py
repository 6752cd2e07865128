# Faster R-CNN R-50-FPN 1x on COCO: the baseline of the CBAM paper's COCO comparison.
# mmdet's config, with every backbone stage trainable (frozen_stages=0) so the SE and
# CBAM variants, which put a plugin in every block, differ from it only by the plugin.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['cbam_mmdet'], allow_failed_imports=False)
model = dict(backbone=dict(frozen_stages=0))
custom_hooks = [dict(type='FrozenAttentionCheckHook')]

# Placement study, before the blocks: one CBAM on the stem's output (after conv1, norm,
# relu, maxpool; 16 channels here), before layer1; the blocks unchanged.
_base_ = './faster_rcnn_r50_shapes.py'
model = dict(backbone=dict(
    type='AttentionResNet', stem_attention=dict(type='CBAM', ratio=16)))

# Placement, before the blocks: one CBAM on the stem's output (64 channels), before layer1.
_base_ = './faster_rcnn_r50_neu.py'
model = dict(backbone=dict(
    type='AttentionResNet', stem_attention=dict(type='CBAM', ratio=16)))

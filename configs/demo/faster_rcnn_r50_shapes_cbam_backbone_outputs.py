# Placement study, after the blocks: one CBAM on each backbone output (C2-C5), the maps the
# FPN receives; the backbone's own path and the FPN unchanged.
_base_ = './faster_rcnn_r50_shapes.py'
model = dict(neck=dict(
    _delete_=True, type='NeckAttention', neck={{_base_.model.neck}}, position='before',
    attention=dict(type='CBAM', ratio=16)))

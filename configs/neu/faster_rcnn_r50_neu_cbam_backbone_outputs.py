# Placement, after the blocks: one CBAM on each backbone output (C2-C5), the FPN's inputs.
_base_ = './faster_rcnn_r50_neu.py'
model = dict(neck=dict(
    _delete_=True, type='NeckAttention', neck={{_base_.model.neck}}, position='before',
    attention=dict(type='CBAM', ratio=16)))

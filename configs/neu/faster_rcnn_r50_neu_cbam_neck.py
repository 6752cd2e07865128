# Placement, after the neck: one CBAM on every FPN output level.
_base_ = './faster_rcnn_r50_neu.py'
model = dict(neck=dict(
    _delete_=True, type='NeckAttention', neck={{_base_.model.neck}},
    attention=dict(type='CBAM', ratio=16)))

# + CBAM (r=16, 7x7) after conv3, before the residual addition, in every block of every
# stage: the paper's placement ("block end").
_base_ = './faster_rcnn_r50_neu.py'
model = dict(backbone=dict(
    plugins=[dict(cfg=dict(type='CBAM', ratio=16), position='after_conv3')]))

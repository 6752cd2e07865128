# + SE (r=16) on every StairNet level, right before its classifier (CBAM paper Table 7).
_base_ = './stairnet300_vgg16_voc0712.py'
model = dict(neck=dict(attention=dict(type='SE', ratio=16)))

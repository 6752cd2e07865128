# faster_rcnn_r50_cbam_coco.py with each Bottleneck's residual addition and ReLU run
# inside CBAM (FusedTailResNet, CBAM.forward_residual): the same model, values and
# state_dict keys; on CUDA two operations fewer per block each way.
_base_ = './faster_rcnn_r50_cbam_coco.py'
model = dict(backbone=dict(type='FusedTailResNet'))

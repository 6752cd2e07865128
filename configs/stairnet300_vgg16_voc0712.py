# StairNet300 VGG16 on PASCAL VOC (train VOC07+12 trainval, test VOC2007 test, 11-point
# mAP@0.5): the CBAM paper's Table 7 detector. SSD300's backbone, extra layers, data and
# schedule; StairNetNeck's top-down path and pre-head convs feed an SSDHead on all six
# levels (38, 19, 10, 5, 3, 1) with 256 channels each; anchors as SSD300 VOC, with
# aspect ratios [2, 3] at conv4_3 as the StairNet code (6 anchors there instead of 4).
_base_ = './ssd300_vgg16_voc0712.py'
model = dict(
    neck=dict(_delete_=True, type='StairNetNeck', in_channels=(512, 1024),
              source_channels=(512, 1024, 512, 256, 256, 256), level_strides=(2, 2, 1, 1),
              level_paddings=(1, 1, 0, 0), l2_norm_scale=20, out_channels=256, num_outs=6),
    bbox_head=dict(
        in_channels=(256, 256, 256, 256, 256, 256),
        anchor_generator=dict(ratios=[[2, 3], [2, 3], [2, 3], [2, 3], [2], [2]])))

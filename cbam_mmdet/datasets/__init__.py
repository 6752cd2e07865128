from .shape_scenes import CLASSES as SHAPE_CLASSES
from .shape_scenes import generate_scene
from .synthetic_shapes import SyntheticShapesDataset, export_coco

__all__ = ['SHAPE_CLASSES', 'generate_scene', 'SyntheticShapesDataset', 'export_coco']

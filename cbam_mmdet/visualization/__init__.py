"""Seeing what attention does: attention maps, Grad-CAM and training curves."""

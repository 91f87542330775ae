"""The visualize stage's library: Grad-CAM maps and their agreement."""

"""One image to the model's input: shared by prepare (image folders) and predict (serving), so a
model is served images fitted exactly as it was trained on. Only numpy and Pillow."""

from __future__ import annotations

import numpy as np

RESIZE_MODES = ("stretch", "pad")


def fit_image(image: object, size: int, mode: str) -> np.ndarray:
    """A PIL RGB image → size×size uint8: stretched, or scaled to fit and padded (aspect kept)."""
    from PIL import Image

    if mode == "stretch":
        return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    width, height = image.size
    scale = size / max(width, height)
    resized = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(resized, ((size - resized.size[0]) // 2, (size - resized.size[1]) // 2))
    return np.asarray(canvas, dtype=np.uint8)

"""One image to the model's input: shared by prepare (image folders) and predict (serving), so a
model is served images fitted exactly as it was trained on. Only numpy and Pillow."""

from __future__ import annotations

import numpy as np

RESIZE_MODES = ("stretch", "pad")
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # 16-bit, 32-bit integer and float greyscale


def to_rgb(image: object) -> object:
    """Any Pillow image → RGB as a viewer shows it: the EXIF orientation applied (phone photos),
    and 16-bit or float greyscale scaled to 8 bits, where Pillow's `convert` would clip every
    value above 255 to white. The first frame of an animation; alpha dropped."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in WIDE_MODES:
        values = np.asarray(image, dtype=np.float64)
        top = float(values.max()) if values.size else 0.0
        if image.mode.startswith("I;16") or 255 < top <= 65535:
            values = values / 257.0
        elif top > 65535 or values.min() < 0:  # other ranges: stretched to 0..255
            low = float(values.min())
            values = (values - low) * (255.0 / max(top - low, 1e-12))
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


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

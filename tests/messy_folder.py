"""A messy, imbalanced image folder like a user's: the data the pipeline must survive untuned.

Seven classes of drawn shapes (learnable, so accuracy means something) from `largest` images
down to `largest / ratio`, saved as PNG, JPEG, BMP and WebP in L, RGB, RGBA and P modes at odd
sizes, plus what real folders hold: a truncated JPEG, a zero-byte PNG, `.DS_Store`, a text
file and hidden `.ipynb_checkpoints/` folders (at the root and inside a class).

`python -m tests.messy_folder OUT [--largest 1200 --ratio 100]` writes one for measuring.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "cross", "hstripes", "vstripes", "ring")
FORMATS = ((".png", "RGB"), (".jpg", "L"), (".bmp", "RGB"), (".webp", "RGB"), (".png", "RGBA"), (".png", "P"))


def _draw(shape: str, rng: np.random.Generator) -> Image.Image:
    """One image of a class: random size, background, colour, position and scale, plus noise."""
    width, height = (int(v) for v in rng.integers(24, 90, 2))
    background = tuple(int(v) for v in rng.integers(0, 120, 3))
    colour = tuple(int(v) for v in rng.integers(120, 256, 3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    side = min(width, height) * rng.uniform(0.45, 0.8)
    cx = width / 2 + rng.uniform(-0.15, 0.15) * width
    cy = height / 2 + rng.uniform(-0.15, 0.15) * height
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    line = max(2, int(side / 8))
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, box[1]), (box[0], box[3]), (box[2], box[3])], fill=colour)
    elif shape == "cross":
        draw.line([(box[0], cy), (box[2], cy)], fill=colour, width=line)
        draw.line([(cx, box[1]), (cx, box[3])], fill=colour, width=line)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=line)
    else:
        for k in range(4):
            offset = k * side / 4
            if shape == "hstripes":
                draw.rectangle((box[0], box[1] + offset, box[2], box[1] + offset + side / 8), fill=colour)
            else:
                draw.rectangle((box[0] + offset, box[1], box[0] + offset + side / 8, box[3]), fill=colour)
    pixels = np.asarray(image, np.int16) + rng.integers(-25, 26, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_messy_folder(root: Path, largest: int = 1200, ratio: int = 100, seed: int = 0) -> dict[str, int]:
    """Write the folder; returns the number of readable images per class."""
    rng = np.random.default_rng(seed)
    smallest = max(3, largest // ratio)
    counts = np.geomspace(largest, smallest, len(CLASSES)).round().astype(int)
    written = {}
    for k, (name, count) in enumerate(zip(CLASSES, counts, strict=True)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            suffix, mode = FORMATS[(i + k) % len(FORMATS)]
            image = _draw(name, rng)
            image = image.convert(mode) if mode != "P" else image.quantize(64)
            image.save(folder / f"{name}_{i:05d}{suffix}")
        written[name] = int(count)
    first = root / CLASSES[0]
    good = (first / f"{CLASSES[0]}_00001.jpg").read_bytes()
    (first / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / CLASSES[1] / "empty.png").write_bytes(b"")
    for folder in (root, first):
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "README.txt").write_text("images from the field team\n")
    (first / "notes.txt").write_text("not an image\n")
    for hidden in (root / ".ipynb_checkpoints", first / ".ipynb_checkpoints"):
        hidden.mkdir(exist_ok=True)
        _draw("square", rng).save(hidden / "stray-checkpoint.png")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--largest", type=int, default=1200)
    parser.add_argument("--ratio", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = write_messy_folder(args.out, args.largest, args.ratio, args.seed)
    print(f"wrote {sum(counts.values())} images to {args.out}: {counts}")


if __name__ == "__main__":
    main()

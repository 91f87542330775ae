"""Classify image files with the exported model: ONNX Runtime, numpy and Pillow only (no torch).

    kd-predict --model export image.png folder/ [--json] [--top 3]     (python -m kd_pipeline.predict)
    kd-predict --model export --benchmark [--threads 1] [--repeats 200]
    python export/predict.py image.png          (the bundle on its own: export stage copies this
                                                 file and prepare's imaging.py beside the model)

Unreadable files are reported on stderr and skipped; the exit code is 1 when any was skipped.
A multi-label bundle (preprocessing.json "task": "multilabel") reports every label whose
probability is above 0.5 (`labels`), and `--top` labels by probability.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

try:  # in the repository, or with the package installed
    from kd_pipeline.prepare.imaging import RESIZE_MODES, fit_image, to_rgb
except ImportError:  # export/predict.py beside export/imaging.py: the bundle with only its three libraries
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under `python -I`
    from imaging import RESIZE_MODES, fit_image, to_rgb  # type: ignore[no-redef]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class Classifier:
    """The export bundle: ONNX session, label map and preprocessing, read from one folder."""

    def __init__(self, bundle: str | Path):
        import onnxruntime as ort

        bundle = Path(bundle)
        for name in ("model.onnx", "labels.json", "preprocessing.json"):
            if not (bundle / name).is_file():
                raise FileNotFoundError(f"{bundle / name}: not found; run `dvc repro export` first")
        self.labels = json.loads((bundle / "labels.json").read_text())
        prep = json.loads((bundle / "preprocessing.json").read_text())
        self.size = tuple(prep["input_size"][1:])
        self.mean = np.asarray(prep["mean"], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(prep["std"], np.float32).reshape(1, 3, 1, 1)
        self.multilabel = prep.get("task") == "multilabel"
        self.resize = prep.get("resize", "stretch")
        if self.resize not in RESIZE_MODES:
            allowed = ", ".join(RESIZE_MODES)
            raise ValueError(f"{bundle / 'preprocessing.json'}: resize {self.resize!r}; allowed: {allowed}")
        self.session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])

    def load(self, path: Path) -> np.ndarray:
        """Any Pillow-readable image → RGB uint8 HWC at the model's input size, fitted (stretched
        or padded) the way the training images were."""
        with Image.open(path) as image:
            image = to_rgb(image)
            if image.size == (self.size[1], self.size[0]):
                return np.asarray(image, dtype=np.uint8)
            return fit_image(image, self.size[0], self.resize)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        x = (images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0 - self.mean) / self.std
        logits = self.session.run(None, {"input": x.astype(np.float32)})[0]
        if self.multilabel:  # each label on its own: an independent sigmoid
            return 1.0 / (1.0 + np.exp(-logits))
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def median_ms(path: Path, batch: np.ndarray, threads: int, repeats: int) -> float:
    """Median milliseconds of one ONNX Runtime run of `batch` through `path`, after a warm-up."""
    import time

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(max(5, repeats // 10)):
        session.run(None, {"input": batch})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"input": batch})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def benchmark(bundle: Path, threads: int, repeats: int) -> dict[str, float]:
    """Batch-1 latency (median ms) of the shipped model and, when it is int8, of its fp32 twin
    (model.fp32.onnx, shipped beside it), on this machine: int8 pays on some CPUs and not others."""
    prep = json.loads((bundle / "preprocessing.json").read_text())
    image = np.random.default_rng(0).standard_normal((1, *prep["input_size"])).astype(np.float32)
    return {name: median_ms(bundle / name, image, threads, repeats)
            for name in ("model.onnx", "model.fp32.onnx") if (bundle / name).is_file()}


def _cpu() -> str:
    try:
        from kd_pipeline.evaluate.machine import cpu_info, describe
    except ImportError:  # the bundle on its own
        import platform

        return f"{platform.processor() or platform.machine()} (instruction sets: install kd-pipeline to list them)"
    return describe(cpu_info())


def _print_benchmark(bundle: Path, threads: int, repeats: int) -> None:
    latencies = benchmark(bundle, threads, repeats)
    print(f"CPU: {_cpu()}; {threads} thread(s), batch 1, median of {repeats}")
    for name, ms in latencies.items():
        print(f"{name}\t{ms:.3f} ms")
    if len(latencies) == 2:
        ratio = latencies["model.fp32.onnx"] / latencies["model.onnx"]
        verdict = "int8 pays here" if ratio > 1 else "int8 is slower here: ship model.fp32.onnx on this CPU"
        print(f"int8 is {ratio:.2f}x the speed of fp32 ({verdict})")


def image_files(paths: list[str]) -> list[Path]:
    """Files as given, and the image files inside any folder given (sorted, recursive)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            found.append(path)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="image files or folders")
    parser.add_argument("--model", default=None,
                        help="the export bundle folder (default: this file's folder when it is a bundle, else export)")
    parser.add_argument("--json", action="store_true", help="one JSON list on stdout")
    parser.add_argument("--top", type=int, default=1, help="classes per image")
    parser.add_argument("--benchmark", action="store_true", help="time the shipped model (and its fp32 twin) here")
    parser.add_argument("--threads", type=int, default=1, help="--benchmark: ONNX Runtime threads")
    parser.add_argument("--repeats", type=int, default=200, help="--benchmark: timed runs")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent
    args.model = args.model or (str(here) if (here / "model.onnx").is_file() else "export")
    try:
        classifier = Classifier(args.model)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.benchmark:
        _print_benchmark(Path(args.model), args.threads, args.repeats)
        return 0
    if not args.paths:
        parser.error("give image files or folders, or --benchmark")
    results, skipped = [], 0
    for path in image_files(args.paths):
        try:
            image = classifier.load(path)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            print(f"skipped {path}: {type(err).__name__}: {err}", file=sys.stderr)
            skipped += 1
            continue
        probs = classifier.probabilities(image[None])[0]
        order = np.argsort(-probs)[: max(1, args.top)]
        top = [{"class": classifier.labels[str(k)], "probability": round(float(probs[k]), 6)} for k in order]
        if classifier.multilabel:
            present = [classifier.labels[str(k)] for k in np.flatnonzero(probs > 0.5)]
            results.append({"path": str(path), "labels": present, "top": top})
            if not args.json:
                print(f"{path}\t{','.join(present) or '(none)'}")
            continue
        results.append({"path": str(path), **top[0], "top": top})
        if not args.json:
            print(f"{path}\t{top[0]['class']}\t{top[0]['probability']:.4f}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())

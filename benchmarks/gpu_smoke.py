"""GPU path check: the pipeline's own fit() on CUDA (bf16 autocast, channels_last, pinned
non-blocking transfers), teacher then a distilled student, with timings and test accuracy.

    python benchmarks/gpu_smoke.py      # on a machine with a CUDA GPU
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from kd_pipeline.core.data import Normalizer, load_meta, load_split
from kd_pipeline.core.evaluation import classification_metrics, predict_logits
from kd_pipeline.core.models import create_model, move_to_device
from kd_pipeline.core.params import DataParams, parse_params
from kd_pipeline.prepare.preparation import prepare
from kd_pipeline.train.training import fit, resolve_device, seed_everything


def main() -> None:
    out = Path(tempfile.mkdtemp()) / "prepared"
    prepare(DataParams(image_size=32), out)
    meta = load_meta(out)
    train, val, test = (load_split(out, s) for s in ("train", "val", "test"))
    params = parse_params({"train": {"epochs": 10, "device": "cuda"}})
    device = resolve_device("cuda")
    print("device", torch.cuda.get_device_name(device))
    seed_everything(0)
    normalizer = Normalizer(meta.mean, meta.std, device, channels_last=True)
    teacher = None
    for name in ("resnet50", "resnet18"):
        model = move_to_device(create_model(name, meta.num_classes), device)
        started = time.perf_counter()
        fit(model, train, val, params.train, normalizer, meta.num_classes,
            teacher=teacher, kd=params.kd if teacher is not None else None, name=name)
        logits = predict_logits(model, test, normalizer)
        accuracy = classification_metrics(test.labels, logits.argmax(1).numpy(), meta.num_classes)["accuracy"]
        print(f"{name}: {time.perf_counter() - started:.1f}s for 10 epochs, test accuracy {accuracy:.4f}")
        teacher = model.eval()


if __name__ == "__main__":
    main()

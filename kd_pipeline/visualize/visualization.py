"""The visualize stage's work: which test images to show, every model's map of them, how much
each model's maps agree with the teacher's over the test split, feature maps and gradient flow.

Pictures go to plots/visualize/ (image plots for `dvc plots show` / `diff`), numbers to
metrics/visualize.json (for `dvc exp show`: does a higher temperature make the student look
more like the teacher?).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from kd_pipeline.core import paths
from kd_pipeline.core.data import Meta, Split, normalize_numpy
from kd_pipeline.core.errors import DataError
from kd_pipeline.core.evaluation import decide
from kd_pipeline.core.files import atomic_dir, write_json
from kd_pipeline.core.models import load_checkpoint, network, upsample
from kd_pipeline.core.params import VisualizeParams
from kd_pipeline.core.paths import DEFAULT_LAYOUT, Layout
from kd_pipeline.core.roles import CHAIN, STUDENT, TEACHER, TORCH_MODELS, source_of
from kd_pipeline.visualize.attribution import agreement, feature_maps, method_of, saliency
from kd_pipeline.visualize.pictures import Panel, Row, feature_maps_png, gradient_flow_png, image_png, overview_png

SHOWN = CHAIN  # plus the deployed variant's float source
COMPARED = tuple(name for name in TORCH_MODELS if name != TEACHER)  # agreement with the teacher
BATCH = 64


class Model:
    """A checkpoint with its own normalisation and input size, for maps and predictions.

    A model that upsamples its input (a teacher at its own image_size) is drawn as its network at
    that size, and its maps are brought back to the image's size, so they overlay and compare.
    """

    def __init__(self, name: str, ckpt_dir: Path, num_classes: int):
        self.name = name
        loaded, card = load_checkpoint(ckpt_dir, num_classes=num_classes)
        self.module = network(loaded)
        self.view: int | None = card.get("view_size")
        self.size: int = card["input_size"][-1]  # the data's
        self.mean, self.std = card["mean"], card["std"]
        self.method = method_of(self.module)

    def inputs(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(normalize_numpy(np.asarray(images), self.mean, self.std))
        return upsample(x, self.view) if self.view else x

    def logits(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module.eval()(self.inputs(images)).float().numpy()

    def maps(self, images: np.ndarray, targets: np.ndarray) -> torch.Tensor:
        maps = saliency(self.module, self.inputs(images), torch.from_numpy(targets.astype(np.int64)))
        return upsample(maps[:, None], self.size)[:, 0] if self.view else maps


def select_images(labels: np.ndarray, wrong: np.ndarray, count: int, seed: int) -> list[int]:
    """`count` test indices, seeded: up to half (at least one when there are any) that the deployed
    variant gets wrong, the rest right, each group spread over as many classes as it holds."""
    rng = np.random.default_rng(seed)
    keys = labels if labels.ndim == 1 else labels.argmax(1)
    n_wrong = min(int(wrong.sum()), max(1, count // 2))
    chosen = _spread(np.flatnonzero(wrong), keys, n_wrong, rng)
    chosen += _spread(np.flatnonzero(~wrong), keys, count - len(chosen), rng)
    return chosen


def _spread(pool: np.ndarray, keys: np.ndarray, count: int, rng: np.random.Generator) -> list[int]:
    """Round-robin over classes (in a seeded order), a seeded pick within each class."""
    by_class: dict[int, list[int]] = {}
    for index in rng.permutation(pool):
        by_class.setdefault(int(keys[index]), []).append(int(index))
    queues = [by_class[k] for k in rng.permutation(sorted(by_class))] if by_class else []
    picked: list[int] = []
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


def _answer(row: np.ndarray, names: list[str]) -> str:
    """A class name, or the present labels of a multi-label answer."""
    if np.ndim(row) == 0:
        return names[int(row)]
    return ", ".join(names[k] for k in np.flatnonzero(row)) or "none"


def _targets(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """The class a map explains: the true class; multi-label, the reference model's top label."""
    return labels if labels.ndim == 1 else logits.argmax(1)


def deployed_mistakes(layout: Layout, test: Split, meta: Meta, source: Model, deployed: str) -> np.ndarray:
    """Which test images the deployed variant gets wrong: its per-image rows from evaluate's
    confusion plot when single-label, else its float source's answers."""
    path = layout.confusion / f"{deployed}.json"
    if not test.multilabel and path.is_file():
        rows = json.loads(path.read_text())
        if len(rows) == len(test):
            predicted = np.array([meta.class_names.index(r["predicted"]) for r in rows])
            return predicted != test.labels
    predicted = decide(_batched(source.logits, test.images), test.multilabel)
    return (predicted != test.labels).reshape(len(test), -1).any(1)


def _batched(fn: Any, images: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])


def teacher_agreement(
    models: dict[str, Model], test: Split, cfg: VisualizeParams
) -> tuple[dict[str, dict[str, float]], int]:
    """Mean per-image correlation and top-pixel overlap of each model's maps with the teacher's,
    all explaining the same class, over `cfg.agreement_images` test images (seeded; 0: all)."""
    count = len(test) if cfg.agreement_images == 0 else min(cfg.agreement_images, len(test))
    order = np.sort(np.random.default_rng(cfg.seed).choice(len(test), count, replace=False))
    teacher = models[TEACHER]
    sums = {name: np.zeros(2) for name in models if name != TEACHER}
    for start in tqdm(range(0, count, BATCH), desc="agreement with the teacher", leave=False, disable=None):
        idx = order[start : start + BATCH]
        images, labels = np.asarray(test.images[idx]), test.labels[idx]
        targets = _targets(labels, teacher.logits(images))
        reference = teacher.maps(images, targets)
        for name in sums:
            correlation, overlap = agreement(reference, models[name].maps(images, targets), cfg.top_fraction)
            sums[name] += [float(correlation.sum()), float(overlap.sum())]
    top = f"top{round(cfg.top_fraction * 100)}_overlap"
    return {name: {"correlation": s[0] / count, top: s[1] / count} for name, s in sums.items()}, count


def image_rows(models: dict[str, Model], shown: list[str], test: Split, indices: list[int],
               names: list[str]) -> list[Row]:
    """Each selected image with every shown model's map of the class that model predicted."""
    images, labels = np.asarray(test.images[indices]), test.labels[indices]
    panels: dict[str, list[Panel]] = {}
    for name in shown:
        logits = models[name].logits(images)
        predicted = decide(logits, test.multilabel)
        heat = models[name].maps(images, logits.argmax(1)).numpy()
        panels[name] = [
            Panel(name, heat[i], _answer(predicted[i], names), bool(np.all(predicted[i] == labels[i])))
            for i in range(len(indices))
        ]
    return [
        Row(index, images[i], _answer(labels[i], names), [panels[name][i] for name in shown])
        for i, index in enumerate(indices)
    ]


def _group_order(name: str) -> tuple[int, str, int]:
    if name == "stem":
        return (0, "", 0)
    if name == "head":
        return (2, "", 0)
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (1, match.group(1), int(match.group(2))) if match else (1, name, 0)


def read_gradient_flow(metrics_dir: Path, roles: tuple[str, ...]) -> dict[str, dict[str, list[float]]]:
    """Each role's per-epoch gradient norm per layer group, from its dvclive TSVs."""
    flows = {}
    for role in roles:
        folder = metrics_dir / role / "plots" / "metrics" / "grad_norm"
        files = sorted(folder.glob("*.tsv"), key=lambda p: _group_order(p.stem))
        if files:
            flows[role] = {
                f.stem: [float(r[f.stem]) for r in csv.DictReader(f.open(), delimiter="\t")] for f in files
            }
    return flows


def visualize(cfg: VisualizeParams, test: Split, meta: Meta, layout: Layout = DEFAULT_LAYOUT) -> dict[str, Any]:
    """Draw every picture into `layout.visualize_plots` and write the agreement metrics; returns them."""
    if len(test) == 0:
        raise DataError("visualize: the test split is empty")
    evaluation = json.loads(layout.evaluation.read_text()) if layout.evaluation.is_file() else {}
    deployed = evaluation.get("deployed") or STUDENT
    source = source_of(deployed)
    shown = [*SHOWN, *([source] if source not in SHOWN else [])]
    models = {name: Model(name, paths.checkpoint_dir(layout.models, name), meta.num_classes)
              for name in dict.fromkeys([*TORCH_MODELS, *shown])}

    wrong = deployed_mistakes(layout, test, meta, models[source], deployed)
    indices = select_images(test.labels, wrong, min(cfg.images, len(test)), cfg.seed)
    rows = image_rows(models, shown, test, indices, meta.class_names)
    scores, compared = teacher_agreement(models, test, cfg)
    method = " / ".join(sorted({models[name].method for name in shown}))
    first = np.asarray(test.images[indices[:1]])
    features = {
        name: [(stage, maps.numpy()) for stage, maps in feature_maps(models[name].module, models[name].inputs(first),
                                                                     cfg.feature_channels)]
        for name in (TEACHER, STUDENT)
    }
    with atomic_dir(layout.visualize_plots) as tmp:
        for rank, row in enumerate(rows, 1):
            image_png(row, method, tmp / f"image_{rank:02d}.png")
        overview_png(rows, method, tmp / "overview.png")
        feature_maps_png(first[0], features, tmp / "feature_maps.png")
        flows = read_gradient_flow(layout.metrics, TORCH_MODELS)
        if flows:
            gradient_flow_png(flows, tmp / "gradient_flow.png")
    result = {
        "deployed": deployed,
        "methods": {name: models[name].method for name in models},
        "images": indices,
        "deployed_wrong_in_selection": int(wrong[indices].sum()),
        "agreement_images": compared,
        "agreement_with_teacher": scores,
    }
    write_json(layout.visualize_metrics, result)
    return result

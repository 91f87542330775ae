"""The real `dvc repro` on a ChestMNIST-format file (14 labels per image), in its own repository."""

from __future__ import annotations

import json
import sys

import pytest

from tests.e2e import new_repo, run, variants_of, write_params


def test_multilabel_chestmnist_end_to_end(tmp_path_factory: pytest.TempPathFactory) -> None:
    """ChestMNIST's layout (14 yes/no labels per image) through every stage, then predict, with the
    ViT chain (timm's test_vit for every role): pruned heads, int8 by calibration and by
    quantization-aware training, attention maps."""
    import numpy as np
    from PIL import Image

    from tests.test_sources import write_medmnist

    repo = new_repo(tmp_path_factory, "kd-e2e-chest")
    raw = repo / "raw"
    raw.mkdir(exist_ok=True)
    write_medmnist(raw, "chestmnist", sizes=(48, 12, 16), labels_per_image=14)
    # two of test_vit's six blocks: every kind of layer, a third of the graph to export and quantize
    vit = {"model": "test_vit", "model_kwargs": {"img_size": 16, "patch_size": 4, "depth": 2}}
    write_params(repo, data={"name": "medmnist", "subset": "chestmnist", "root": str(raw)},
                 train={"class_weights": True}, kd={"learn_from": "all_above"}, teacher=vit, assistant=vit, student=vit,
                 # every layer in int8 (no accuracy control), so the integer-kernel checks below see full int8
                 quantize={"method": "qat", "qat_epochs": 1, "max_accuracy_drop": 1.0})
    run(["dvc", "repro"], repo)
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["task"] == "multilabel" and len(meta["class_names"]) == 14
    assert json.loads((repo / "metrics/data.json").read_text())["train_images"] == 48  # the official splits
    card = json.loads((repo / "models/student/model.json").read_text())
    assert card["num_classes"] == 14 and card["class_names"] == meta["class_names"]
    assert (repo / "plots/data/samples.png").is_file()
    assert card["task"] == "multilabel" and card["teacher"] == "assistant+teacher"  # densely guided
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    assert evaluation["task"] == "multilabel"
    assert set(evaluation["variants"]) == variants_of(repo) | {"pruned_qat", "pruned_qat_onnx", "pruned_qat_int8"}
    for measured in evaluation["variants"].values():
        assert {"accuracy", "exact_match", "roc_auc", "f1"} <= set(measured)
    variants = evaluation["variants"]
    assert variants["pruned"]["parameters"] < 0.5 * variants["student"]["parameters"]  # heads narrowed
    assert variants["pruned_int8"]["integer_mac_share"] >= 0.95
    assert variants["pruned_qat_int8"]["integer_mac_share"] >= 0.95  # QAT's QDQ file runs integer kernels
    assert variants["pruned_qat"]["parameters"] == variants["pruned"]["parameters"]  # same architecture
    qat_card = json.loads((repo / "models/quantized/pruned_qat/model.json").read_text())
    assert qat_card["role"] == "pruned_qat" and qat_card["qat"]["epochs"] == 1 and qat_card["qat"]["layers"] > 0
    seen = json.loads((repo / "metrics/visualize.json").read_text())
    assert set(seen["methods"].values()) == {"cls-attention"}
    summary = (repo / "reports/summary.md").read_text()
    assert "mean per-label accuracy" in summary and "| atelectasis |" in summary
    rows = json.loads((repo / "plots/confusion/student.json").read_text())
    assert rows and all(r["actual"].endswith((": yes", ": no")) for r in rows)
    assert json.loads((repo / "export/preprocessing.json").read_text())["task"] == "multilabel"

    images = np.load(repo / "data/prepared/test/images.npy")
    folder = repo / "to_predict_chest"
    folder.mkdir(exist_ok=True)
    Image.fromarray(images[0]).save(folder / "0.png")
    proc = run([sys.executable, "-m", "kd_pipeline.predict", "--model", "export", "--json", "--top", "14",
                str(folder)], repo)
    [result] = json.loads(proc.stdout)
    probs = {t["class"]: t["probability"] for t in result["top"]}
    assert len(probs) == 14 and set(result["labels"]) == {c for c, p in probs.items() if p > 0.5}

"""`predict` on the files users actually have: every odd one classified or skipped in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kd_pipeline import predict
from kd_pipeline.core.models import create_model
from kd_pipeline.prepare.imaging import to_rgb
from kd_pipeline.quantize.onnx_export import export_onnx
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export bundle as the export stage lays it out, around a tiny untrained network."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    export_onnx(create_model(TINY_MODEL, 3).eval(), [3, 16, 16], folder / "model.onnx")
    (folder / "labels.json").write_text(json.dumps({"0": "a", "1": "b", "2": "c"}))
    prep = {"input_size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.25] * 3, "resize": "pad", "task": "multiclass"}
    (folder / "preprocessing.json").write_text(json.dumps(prep))
    return folder


def write_odd_files(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(folder / "plain.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(200))
    (folder / "empty.png").write_bytes(b"")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one_pixel.png")
    Image.fromarray(rng.integers(0, 65536, (24, 24), dtype=np.uint16)).save(folder / "sixteen_bit.png")
    Image.new("CMYK", (20, 20), (0, 255, 0, 0)).save(folder / "cmyk.jpg")
    frames = [Image.new("P", (20, 20), k) for k in (1, 2, 3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50)


def test_odd_files_are_classified_and_broken_ones_skipped_in_one_line_each(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_odd_files(tmp_path / "in")
    code = predict.main(["--model", str(bundle), "--json", str(tmp_path / "in")])
    out, err = capsys.readouterr()
    assert code == 1  # some files were skipped
    skipped = sorted(line.split(":")[0] for line in err.splitlines())
    assert skipped == [f"skipped {tmp_path / 'in' / name}" for name in ("corrupt.jpg", "empty.png")]
    classified = {Path(r["path"]).name: r["class"] for r in json.loads(out)}
    assert set(classified) == {"plain.png", "one_pixel.png", "sixteen_bit.png", "cmyk.jpg", "animated.gif"}
    assert set(classified.values()) <= {"a", "b", "c"}


def test_a_missing_bundle_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict.main(["--model", str(tmp_path), "x.png"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {tmp_path / 'model.onnx'}: not found; run `dvc repro export` first"
    ]


def test_sixteen_bit_greyscale_is_scaled_not_clipped_to_white() -> None:
    values = np.array([[0, 257 * 64], [257 * 128, 65535]], dtype=np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(values)))
    assert rgb[..., 0].tolist() == [[0, 64], [128, 255]]
    assert np.asarray(Image.fromarray(values).convert("RGB"))[0, 1, 0] == 255  # what Pillow alone does


def test_the_exif_orientation_is_applied_as_a_viewer_shows_it(tmp_path: Path) -> None:
    image = Image.new("RGB", (30, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise to view
    image.save(tmp_path / "rotated.jpg", exif=exif)
    with Image.open(tmp_path / "rotated.jpg") as saved:
        assert saved.size == (30, 10) and to_rgb(saved).size == (10, 30)


def test_benchmark_times_the_model_and_its_fp32_twin_where_it_runs(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert predict.main(["--model", str(bundle), "--benchmark", "--repeats", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "model.onnx\t" in out and "model.fp32.onnx" not in out
    twin = tmp_path / "bundle"
    shutil.copytree(bundle, twin)
    shutil.copyfile(twin / "model.onnx", twin / "model.fp32.onnx")
    latencies = predict.benchmark(twin, threads=1, repeats=5)
    assert set(latencies) == {"model.onnx", "model.fp32.onnx"} and all(ms > 0 for ms in latencies.values())
    assert predict.main(["--model", str(twin), "--benchmark", "--repeats", "5"]) == 0
    assert "int8 is " in capsys.readouterr().out

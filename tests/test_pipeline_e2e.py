"""The real `dvc repro` on a tiny configuration, in a temporary git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY_MODEL

ROLES = ("teacher", "assistant", "student")
STAGES = {
    "prepare", "train_teacher", "distill_assistant", "distill_student", "distill_direct", "train_baseline",
    "prune", "quantize", "evaluate", "export",
}
VARIANTS = {*ROLES, "direct", "baseline", "pruned", "student_onnx", "pruned_onnx", "student_int8", "pruned_int8"}


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(cwd)
    env["DVC_NO_ANALYTICS"] = "1"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _write_params(repo: Path, **changes: dict) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["image_size"] = 16
    for role in ROLES:
        params[role]["model"] = TINY_MODEL
    params["train"].update({"epochs": 1, "batch_size": 128, "num_threads": 1, "device": "cpu"})
    params["evaluate"].update({"warmup": 1, "repeats": 3, "throughput_batch": 8})
    params["prune"].update({"epochs": 1})
    params["quantize"].update({"calibration_batches": 2})
    for group, values in changes.items():
        params[group].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("kd-e2e")
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("stages", "kd_pipeline"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    _write_params(repo)
    _run(["git", "init", "-q"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"], repo)
    _run(["dvc", "init", "-q"], repo)
    return repo


def test_repro_writes_every_output(repo: Path) -> None:
    _run(["dvc", "repro"], repo)
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["class_names"] == [str(d) for d in range(10)]
    for split in ("train", "val", "test"):
        assert (repo / f"data/prepared/{split}/images.npy").is_file()
    for role in (*ROLES, "direct", "baseline"):
        card = json.loads((repo / f"models/{role}/model.json").read_text())
        assert card["timm_name"] == TINY_MODEL and card["num_classes"] == 10
        assert card["input_size"] == [3, 16, 16]
        assert (repo / f"models/{role}/model.safetensors").stat().st_size > 0
        metrics = json.loads((repo / f"metrics/{role}/metrics.json").read_text())
        assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
        assert {"loss", "accuracy", "precision", "recall", "f1"} <= set(metrics["val"])
        plots = repo / f"metrics/{role}/plots/metrics"
        for name in ("train/loss", "val/accuracy", "val/f1", "lr", "epoch_time_s", "peak_memory_mb"):
            assert (plots / f"{name}.tsv").is_file(), name
    assert json.loads((repo / "models/student/model.json").read_text())["teacher"] == "assistant"
    assert json.loads((repo / "models/direct/model.json").read_text())["teacher"] == "teacher"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == STAGES
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    assert set(evaluation["variants"]) == VARIANTS
    assert {"distillation_gain", "assistant_gain", "targets", "reference"} <= set(evaluation)
    assert json.loads((repo / "reports/evaluated_files.json").read_text())[evaluation["deployed"]]["sha256"]
    summary = (repo / "reports/summary.md").read_text()
    for name in VARIANTS:
        assert f"| {name} |" in summary
    exported = json.loads((repo / "metrics/export.json").read_text())
    assert exported["variant"] == evaluation["deployed"]
    assert exported["meets_targets"] == evaluation["targets_passed"]
    card_text = (repo / "export/MODEL_CARD.md").read_text()
    assert f"**meets_targets**: {str(evaluation['targets_passed']).lower()}" in card_text
    for name in ("model.onnx", "model.safetensors", "labels.json", "preprocessing.json", "MODEL_CARD.md"):
        assert (repo / "export" / name).is_file(), name
    assert (repo / "plots/tradeoff.png").is_file()
    assert (repo / "plots/confusion/student.json").is_file()
    assert not (repo / ".resume/student/state.pt").exists(), "resume state left after success"

    shown = _run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "metrics/student/metrics.json" in shown

    html = _run(["dvc", "plots", "show", "--out", "plots_html"], repo)
    page = (repo / "plots_html/index.html").read_text()
    assert "vega" in page.lower() and "confusion" in page, html.stdout

    started = time.perf_counter()
    again = _run(["dvc", "repro"], repo)
    assert "up to date" in again.stdout
    assert time.perf_counter() - started < 30


def test_bad_param_fails_in_one_line_and_good_params_restore_from_cache(repo: Path) -> None:
    _write_params(repo, kd={"alpha": 2})
    proc = _run(["dvc", "repro"], repo, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: params.yaml")]
    assert errors == ["error: params.yaml: kd.alpha = 2 is not allowed: Input should be less than or equal to 1"]
    assert "Traceback" not in proc.stderr

    _write_params(repo)
    restored = _run(["dvc", "repro"], repo)
    assert "epoch" not in restored.stdout, "a stage retrained instead of restoring from the run cache"
    assert (repo / "models/student/model.safetensors").is_file()


def test_a_role_budget_change_invalidates_that_role_and_its_pupils_only(repo: Path) -> None:
    _write_params(repo, teacher={"train": {"epochs": 3}})
    changed = set(json.loads(_run(["dvc", "status", "--json"], repo).stdout))
    assert changed == {"train_teacher"}  # its pupils follow once models/teacher changes; the baseline does not
    _write_params(repo)


def test_two_runs_same_metrics(repo: Path) -> None:
    before = json.loads((repo / "metrics/student/metrics.json").read_text())
    _run(["dvc", "repro", "--force", "--single-item", "distill_student"], repo)
    after = json.loads((repo / "metrics/student/metrics.json").read_text())
    for key in ("test", "val"):
        assert before[key] == after[key]


def test_predict_matches_evaluation_without_torch(repo: Path) -> None:
    import numpy as np
    from PIL import Image

    deployed = json.loads((repo / "metrics/evaluate.json").read_text())["deployed"]
    expected = json.loads((repo / f"plots/confusion/{deployed}.json").read_text())
    images = np.load(repo / "data/prepared/test/images.npy")
    folder = repo / "to_predict"
    folder.mkdir(exist_ok=True)
    for i in range(6):
        Image.fromarray(images[i]).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    script = (
        "import sys, runpy; sys.modules['torch'] = None; sys.argv = sys.argv[1:];"
        " runpy.run_module('kd_pipeline.predict', run_name='__main__')"
    )
    proc = _run([sys.executable, "-c", script, "x", "--model", "export", "--json", "to_predict"], repo, check=False)
    assert proc.returncode == 1, proc.stderr  # one file skipped
    assert "skipped to_predict/broken.png" in proc.stderr
    results = {Path(r["path"]).stem: r["class"] for r in json.loads(proc.stdout)}
    assert results == {str(i): expected[i]["predicted"] for i in range(6)}


def test_non_default_source_medmnist_file_on_disk(repo: Path) -> None:
    from tests.test_sources import write_medmnist

    raw = repo / "raw"
    raw.mkdir(exist_ok=True)
    write_medmnist(raw, sizes=(40, 10, 12))
    _write_params(repo, data={"name": "medmnist", "subset": "breastmnist", "root": str(raw)})
    _run(["dvc", "repro", "distill_student"], repo)
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["class_names"] == ["malignant", "normal, benign"]
    assert meta["counts"]["test"] == {"malignant": 6, "normal, benign": 6}
    card = json.loads((repo / "models/student/model.json").read_text())
    assert card["num_classes"] == 2 and card["class_names"] == meta["class_names"]
    assert (repo / "plots/data/samples.png").is_file()
    assert json.loads((repo / "metrics/data.json").read_text())["train_images"] == 40


def test_multilabel_chestmnist_end_to_end(repo: Path) -> None:
    """ChestMNIST's layout (14 yes/no labels per image) through every stage, then predict."""
    import numpy as np
    from PIL import Image

    from tests.test_sources import write_medmnist

    raw = repo / "raw"
    raw.mkdir(exist_ok=True)
    write_medmnist(raw, "chestmnist", sizes=(48, 12, 16), labels_per_image=14)
    _write_params(repo, data={"name": "medmnist", "subset": "chestmnist", "root": str(raw)},
                  train={"class_weights": True})
    _run(["dvc", "repro"], repo)
    assert json.loads((repo / "data/prepared/meta.json").read_text())["task"] == "multilabel"
    assert json.loads((repo / "models/student/model.json").read_text())["task"] == "multilabel"
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    assert evaluation["task"] == "multilabel" and set(evaluation["variants"]) == VARIANTS
    for measured in evaluation["variants"].values():
        assert {"accuracy", "exact_match", "roc_auc", "f1"} <= set(measured)
    summary = (repo / "reports/summary.md").read_text()
    assert "mean per-label accuracy" in summary and "| atelectasis |" in summary
    rows = json.loads((repo / "plots/confusion/student.json").read_text())
    assert rows and all(r["actual"].endswith((": yes", ": no")) for r in rows)
    assert json.loads((repo / "export/preprocessing.json").read_text())["task"] == "multilabel"

    images = np.load(repo / "data/prepared/test/images.npy")
    folder = repo / "to_predict_chest"
    folder.mkdir(exist_ok=True)
    Image.fromarray(images[0]).save(folder / "0.png")
    proc = _run([sys.executable, "-m", "kd_pipeline.predict", "--model", "export", "--json", "--top", "14",
                 str(folder)], repo)
    [result] = json.loads(proc.stdout)
    probs = {t["class"]: t["probability"] for t in result["top"]}
    assert len(probs) == 14 and set(result["labels"]) == {c for c, p in probs.items() if p > 0.5}


def test_messy_imbalanced_folder_runs_through_export_with_default_params(repo: Path) -> None:
    """A user's folder, untuned: 1:100 imbalance, mixed formats and modes, corrupt and hidden files."""
    from tests.messy_folder import write_messy_folder

    folder = repo / "messy"
    counts = write_messy_folder(folder, largest=300, ratio=100)
    _write_params(repo, data={"name": "imagefolder", "root": str(folder)})
    _run(["dvc", "repro"], repo)
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["class_names"] == sorted(counts)
    assert {name: sum(meta["counts"][s][name] for s in meta["counts"]) for name in counts} == counts
    assert all(meta["counts"][split]["ring"] >= 1 for split in ("train", "val", "test"))
    skipped = " ".join(meta["source"]["skipped_files"])
    assert "truncated.jpg" in skipped and "empty.png" in skipped and len(meta["source"]["skipped_files"]) == 2
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    exported = json.loads((repo / "metrics/export.json").read_text())
    assert exported["variant"] == evaluation["deployed"] and (repo / "export/model.onnx").is_file()
    if not evaluation["targets_passed"]:
        assert "**meets_targets**: false" in (repo / "export/MODEL_CARD.md").read_text()


def test_queued_sweep_keeps_good_experiments_and_bad_keys_fail(repo: Path) -> None:
    _write_params(repo)
    _run(["dvc", "repro"], repo)  # back to the tiny digits run (restored from the run cache)
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], repo)

    unknown = _run(["dvc", "exp", "run", "-S", "kd.temprature=6"], repo, check=False)
    assert unknown.returncode != 0 and "kd.temprature" in unknown.stderr

    for value in ("kd.temperature=6", "kd.alpha=2"):
        _run(["dvc", "exp", "run", "--queue", "-S", value], repo)
    _run(["dvc", "queue", "start", "-j", "1"], repo)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = _run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert status.count("Success") == 1 and status.count("Failed") == 1, status

    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo).stdout)
    temperatures = []
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                metrics = data.get("metrics", {})
                if "metrics/student/metrics.json" in metrics and not rev.get("error"):
                    temperatures.append(params["kd"]["temperature"])
    assert temperatures == [6.0], shown

    log = _run(["dvc", "queue", "logs", next(
        line.split()[0] for line in status.splitlines() if "Failed" in line)], repo, check=False)
    assert "kd.alpha = 2 is not allowed" in log.stdout + log.stderr


def _offline_template(repo: Path) -> Path | None:
    """DVC's page loads vega from a CDN; this machine has no internet, so inline npm's copies."""
    vega = ROOT / ".cache" / "vega" / "node_modules"
    files = [vega / "vega/build/vega.min.js", vega / "vega-lite/build/vega-lite.min.js",
             vega / "vega-embed/build/vega-embed.min.js"]
    if not all(f.is_file() for f in files):
        return None
    scripts = "\n".join(f"<script>{f.read_text()}</script>" for f in files)
    template = repo / "offline_template.html"
    template.write_text(
        "<!DOCTYPE html><html><head><title>plots</title>"
        "<script>window.onerror = function (m) { document.title = 'JSERROR ' + m; };</script>"
        f"{scripts}</head><body>{{plot_divs}}</body></html>"
    )
    return template


def test_plots_render_in_a_browser(repo: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    template = _offline_template(repo)
    if chromium is None or template is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium or the npm vega files are missing (make test installs them)")
        pytest.skip("no chromium or vega files: run `make test`, which installs them")

    pages = {}
    _run(["dvc", "plots", "show", "--html-template", str(template), "--out", "html_show"], repo)
    pages["show"] = repo / "html_show" / "index.html"
    _run(["dvc", "plots", "diff", "HEAD", "--html-template", str(template), "--out", "html_diff"], repo)
    pages["diff"] = repo / "html_diff" / "index.html"
    for kind, page in pages.items():
        html = page.read_text()
        expected = html.count("vegaEmbed(")
        assert expected >= 10, f"{kind}: only {expected} plots declared"
        proc = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={repo / ('chrome-' + kind)}", "--virtual-time-budget=20000",
             "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=180,
        )
        dom = proc.stdout
        assert "<title>plots</title>" in dom, dom[dom.find("<title>"):][:300]  # onerror would retitle it
        drawn = dom.count("<canvas") + dom.count('<svg class="marks"')
        assert drawn >= expected, f"{kind}: {drawn} of {expected} plots drew"
        assert dom.count("<img") >= 1  # tradeoff.png and the data plots are images

"""The real `dvc repro` on a user's messy, imbalanced image folder, tiny models and budgets, in a
temporary git repository: every stage, resume after a kill, experiments, the artifact, the plots.

One pipeline serves every test here, because each run costs about 11 s of imports per stage. The
digits' own path to prepared arrays is tests/test_data.py's; `make repro` runs it whole."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kd_pipeline.records.experiments import show
from kd_pipeline.records.store import record
from tests.conftest import ROOT, TINY_MODEL
from tests.e2e import ROLES, STAGES, kill_once_saved, new_repo, run, run_queue, variants_of, write_params
from tests.messy_folder import write_messy_folder

# Two epochs for the student and the prune fine-tune, so a kill after the first leaves one to
# resume; augmentation, so the student's teacher runs per batch (nothing cached to lean on).
RESUMABLE = {"student": {"train": {"epochs": 2}}, "prune": {"epochs": 2}, "train": {"augment": {"hflip": True}}}


COUNTS: dict[str, int] = {}  # readable images per class of the fixture's folder


def tiny(repo: Path, **changes: dict) -> None:
    """This module's params: the tiny run on the messy folder, resumable, plus `changes`."""
    merged = {group: dict(values) for group, values in RESUMABLE.items()}
    merged["data"] = {"name": "imagefolder", "root": str(repo / "messy")}  # outside data/raw: not versioned
    for group, values in changes.items():
        merged.setdefault(group, {}).update(values)
    write_params(repo, **merged)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder, untuned: 1:100 imbalance, mixed formats and modes, corrupt and hidden files."""
    made = new_repo(tmp_path_factory)
    COUNTS.update(write_messy_folder(made / "messy", largest=300, ratio=100))
    tiny(made)
    return made


def test_repro_writes_every_output(repo: Path, tmp_path: Path) -> None:
    untracked = run(["dvc", "repro"], repo)
    assert "warning: data.root" in untracked.stdout and "is not versioned by DVC" in untracked.stdout
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["class_names"] == sorted(COUNTS)
    assert {name: sum(meta["counts"][s][name] for s in meta["counts"]) for name in COUNTS} == COUNTS
    assert all(meta["counts"][split]["ring"] >= 1 for split in ("train", "val", "test"))
    skipped = " ".join(meta["source"]["skipped_files"])
    assert "truncated.jpg" in skipped and "empty.png" in skipped and len(meta["source"]["skipped_files"]) == 2
    for split in ("train", "val", "test"):
        assert (repo / f"data/prepared/{split}/images.npy").is_file()
    for role in (*ROLES, "direct", "baseline"):
        card = json.loads((repo / f"models/{role}/model.json").read_text())
        assert card["timm_name"] == TINY_MODEL and card["num_classes"] == len(COUNTS)
        assert card["input_size"] == [3, 16, 16]
        assert (repo / f"models/{role}/model.safetensors").stat().st_size > 0
        metrics = json.loads((repo / f"metrics/{role}/metrics.json").read_text())
        assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
        assert {"loss", "accuracy", "precision", "recall", "f1"} <= set(metrics["val"])
        plots = repo / f"metrics/{role}/plots/metrics"
        for name in ("train/loss", "val/accuracy", "val/f1", "lr", "grad_norm/stem", "grad_norm/layer4",
                     "grad_norm/head"):
            assert (plots / f"{name}.tsv").is_file(), name
        assert not (plots / "epoch_time_s.tsv").exists()  # a cached output holds nothing time-dependent
    assert json.loads((repo / "models/student/model.json").read_text())["teacher"] == "assistant"
    assert json.loads((repo / "models/direct/model.json").read_text())["teacher"] == "teacher"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == STAGES
    timing = run([sys.executable, "-m", "kd_pipeline.core.stage_times"], repo).stdout
    assert "not run here" not in timing and "total" in timing  # every stage's wall time, outside its outputs
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    VARIANTS = variants_of(repo)
    assert set(evaluation["variants"]) == VARIANTS
    assert {"distillation_gain", "assistant_gain", "targets", "reference", "machine"} <= set(evaluation)
    # Compression starts from the best small model on validation, in the run's decision metric.
    origin = json.loads((repo / "models/pruned/model.json").read_text())["origin"]
    metric = evaluation["decision_metric"]
    small = {role: json.loads((repo / f"models/{role}/model.json").read_text())["val_metrics"][metric]
             for role in ("student", "direct", "baseline")}
    assert origin["source"] == max(small, key=small.get) and origin["metric"] == metric
    assert all(evaluation["variants"][name]["val"][metric] >= 0 for name in VARIANTS)
    assert json.loads((repo / "reports/evaluated_files.json").read_text())[evaluation["deployed"]]["sha256"]
    summary = (repo / "reports/summary.md").read_text()
    for name in VARIANTS:
        assert f"| {name} |" in summary
    assert f"Compression: {origin['reason']}." in summary
    quantization = (repo / "reports/quantization.md").read_text()
    assert "## pruned" in quantization and (repo / "plots/quantization.png").is_file()
    for name in VARIANTS:
        if name.endswith("_int8"):
            assert evaluation["variants"][name]["integer_mac_share"] >= 0.8
    exported = json.loads((repo / "metrics/export.json").read_text())
    assert exported["variant"] == evaluation["deployed"]
    assert exported["meets_targets"] == evaluation["targets_passed"]
    card_text = (repo / "export/MODEL_CARD.md").read_text()
    assert f"**meets_targets**: {str(evaluation['targets_passed']).lower()}" in card_text
    for name in ("model.onnx", "model.safetensors", "labels.json", "preprocessing.json", "MODEL_CARD.md",
                 "predict.py", "imaging.py"):
        assert (repo / "export" / name).is_file(), name
    header = yaml.safe_load(card_text.split("---")[1])  # the front matter model hubs read
    assert header["pipeline_tag"] == "image-classification" and header["onnx_opset"] >= 17
    assert "## Limitations" in card_text and "## Intended use" in card_text
    assert (repo / "plots/tradeoff.png").is_file()
    assert (repo / "plots/confusion/student.json").is_file()
    pictures = {p.name for p in (repo / "plots/visualize").iterdir()}
    assert {"overview.png", "feature_maps.png", "gradient_flow.png", "image_01.png"} <= pictures
    seen = json.loads((repo / "metrics/visualize.json").read_text())
    assert seen["deployed"] == evaluation["deployed"] and len(seen["images"]) == 4
    assert seen["agreement_images"] == 100
    assert set(seen["agreement_with_teacher"]) == {"assistant", "student", "direct", "baseline", "pruned"}
    for role in ("student", "pruned"):
        assert not (repo / f".resume/{role}/state.pt").exists(), f"{role}: resume state left after success"

    # What `dvc exp show` and `dvc metrics show` list: the headline and the data, ≤ 30 numbers;
    # the per-variant and per-epoch detail are files the tools read, not metrics columns.
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    files = next(iter(shown.values()))["data"]
    assert set(files) == {"metrics/headline.json", "metrics/data.json"}, sorted(files)
    numbers = [v for f in files.values() for v in f["data"].values()
               if isinstance(v, int | float) and not isinstance(v, bool)]
    headline = files["metrics/headline.json"]["data"]
    assert 8 <= len(numbers) <= 30 and headline["deployed"] == evaluation["deployed"]
    assert headline["deployed_test_accuracy"] == evaluation["variants"][evaluation["deployed"]]["accuracy"]

    drawn = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)["data"]
    assert 6 <= len(drawn) <= 12 and "Deployed model, test confusion matrix" in drawn, sorted(drawn)
    html = run(["dvc", "plots", "show", "--out", "plots_html"], repo)
    page = (repo / "plots_html/index.html").read_text()
    assert "vega" in page.lower() and "Deployed model, test confusion matrix" in page, html.stdout

    again = run(["dvc", "repro"], repo)
    assert _ran(again.stdout) == ["cpu"], again.stdout  # the CPU's kernel class is read every time

    # The finished run records (what `kd-record` and every `--rerun` end with): the always-changed
    # `cpu` stage is not a stale lock.
    folder = record("e2e", "dvc repro", root=repo, results=tmp_path / "results")
    assert json.loads((folder / "evaluate.json").read_text()) == evaluation
    assert json.loads((folder / "export.json").read_text()) == exported

    # A lock another CPU class made (its reports/cpu.json, committed): evaluate measures again
    # here, so export checks predictions of this CPU's; nothing retrains.
    here = (repo / "reports/cpu.json").read_text()
    (repo / "reports/cpu.json").write_text(here.replace(json.loads(here)["int8_kernels"], "another CPU's"))
    run(["dvc", "commit", "-f", "cpu", "evaluate"], repo)
    other = run(["dvc", "repro"], repo)
    assert {"cpu", "evaluate"} <= set(_ran(other.stdout)) <= {"cpu", "evaluate", "visualize", "export"}, other.stdout
    assert (repo / "reports/cpu.json").read_text() == here


def _ran(stdout: str) -> list[str]:
    """The stages `dvc repro` ran, in order."""
    return re.findall(r"^Running stage '([^']+)'", stdout, re.MULTILINE)


def test_bad_param_fails_in_one_line_and_good_params_restore_from_cache(repo: Path) -> None:
    tiny(repo, kd={"alpha": 2})
    proc = run(["dvc", "repro"], repo, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: params.yaml")]
    assert errors == ["error: params.yaml: kd.alpha = 2 is not allowed: Input should be less than or equal to 1"]
    assert "Traceback" not in proc.stderr

    tiny(repo)
    restored = run(["dvc", "repro"], repo)
    assert "epoch" not in restored.stdout, "a stage retrained instead of restoring from the run cache"
    assert (repo / "models/student/model.safetensors").is_file()


def test_a_role_budget_change_invalidates_that_role_and_its_pupils_only(repo: Path) -> None:
    tiny(repo, teacher={"train": {"epochs": 3}})
    changed = set(json.loads(run(["dvc", "status", "--json"], repo).stdout)) - {"cpu"}  # cpu: always changed
    assert changed == {"train_teacher"}  # its pupils follow once models/teacher changes; the baseline does not
    tiny(repo)


def _out_hash(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


@pytest.mark.parametrize(("stage", "role"), [("distill_student", "student"), ("prune", "pruned")])
def test_a_killed_stage_resumes_to_the_uninterrupted_runs_hash(repo: Path, tmp_path: Path, stage: str,
                                                                role: str) -> None:
    """SIGKILL once an epoch is saved, then `dvc repro`: the stage picks up after that epoch and
    writes what the first, uninterrupted run wrote (distillation and the prune fine-tune)."""
    out = f"models/{role}"
    uninterrupted = _out_hash(repo, stage, out)
    state = repo / f".resume/{role}/state.pt"
    kill_once_saved(repo, stage, state, tmp_path / "killed.log", flags=("--force", "--single-item"))
    drawn = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)["data"]["Validation accuracy per role"]
    files = {point["filename"] for point in drawn[0]["content"]["data"]["values"]}  # DVC drops the shared "metrics/"
    assert f"{role}/plots/metrics/val/accuracy.tsv" in files, f"a killed {stage}'s epochs are not drawn: {files}"
    assert json.loads((repo / f"metrics/{role}/metrics.json").read_text())["complete"] is False
    resumed = run(["dvc", "repro", "--force", "--single-item", stage], repo)  # its lock entry would restore it
    assert f"{role}: resuming after epoch 1" in resumed.stdout + resumed.stderr
    assert not state.exists()
    assert _out_hash(repo, stage, out) == uninterrupted


def test_the_bundle_alone_classifies_in_a_venv_with_only_onnxruntime_numpy_and_pillow(
        repo: Path, tmp_path: Path) -> None:
    """export/ copied anywhere, run with a fresh interpreter that has only the three libraries
    (pinned as requirements.lock pins them): the test accuracy evaluate reported for what ships."""
    import venv

    import numpy as np
    from PIL import Image

    pins = {name: re.search(rf"^{name}==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M | re.I).group(1)
            for name in ("onnxruntime", "numpy", "pillow")}
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # not even pip: this pip installs into it (--python)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    run([*pip, "install", "--quiet", *(f"{name}=={version}" for name, version in pins.items())], tmp_path)
    bundle = shutil.copytree(repo / "export", tmp_path / "bundle")
    images = np.load(repo / "data/prepared/test/images.npy")
    labels = np.load(repo / "data/prepared/test/labels.npy")
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    proc = run([str(python), "-I", str(bundle / "predict.py"), "--json", str(folder)], tmp_path)
    names = json.loads((bundle / "labels.json").read_text())
    predicted = [r["class"] for r in sorted(json.loads(proc.stdout), key=lambda r: r["path"])]
    accuracy = float(np.mean([p == names[str(int(y))] for p, y in zip(predicted, labels, strict=True)]))
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    assert accuracy == pytest.approx(evaluation["variants"][evaluation["deployed"]]["accuracy"], abs=1e-9)
    frozen = run([*pip, "freeze"], tmp_path).stdout.lower()
    assert "torch" not in frozen and "kd-pipeline" not in frozen


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
    proc = run([sys.executable, "-c", script, "x", "--model", "export", "--json", "to_predict"], repo, check=False)
    assert proc.returncode == 1, proc.stderr  # one file skipped
    assert "skipped to_predict/broken.png" in proc.stderr
    results = {Path(r["path"]).stem: r["class"] for r in json.loads(proc.stdout)}
    assert results == {str(i): expected[i]["predicted"] for i in range(6)}


def test_queued_sweep_keeps_good_experiments_and_bad_keys_fail(repo: Path) -> None:
    tiny(repo)
    run(["dvc", "repro"], repo)  # back to the tiny digits run (restored from the run cache)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], repo)

    unknown = run(["dvc", "exp", "run", "-S", "kd.temprature=6"], repo, check=False)
    assert unknown.returncode != 0 and "kd.temprature" in unknown.stderr

    # visualize.images reruns visualize alone (with the always-run cpu stage; everything else is
    # restored from the run cache): the queue, its temporary workspace and a queued experiment's
    # outputs are what is under test, not training or timing again.
    for value in ("visualize.images=2", "kd.alpha=2"):
        run(["dvc", "exp", "run", "--queue", "-S", value], repo)
    status = run_queue(repo, queued=2)
    assert status.count("Success") == 1 and status.count("Failed") == 1, status

    shown = show(repo)  # `dvc exp show --json` with each rev's detail files read from its commit
    drawn = []
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                metrics = data.get("metrics", {})
                if {"metrics/headline.json", "metrics/evaluate.json"} <= set(metrics) and not rev.get("error"):
                    drawn.append(params["visualize"]["images"])
                    assert metrics["metrics/evaluate.json"]["data"]["deployed"] == \
                        metrics["metrics/headline.json"]["data"]["deployed"]
    assert drawn == [2], shown

    logs = {state: run(["dvc", "queue", "logs", next(line.split()[0] for line in status.splitlines() if state in line)],
                       repo, check=False) for state in ("Success", "Failed")}
    assert _ran(logs["Success"].stdout) == ["cpu", "visualize"], logs["Success"].stdout
    assert "kd.alpha = 2 is not allowed" in logs["Failed"].stdout + logs["Failed"].stderr


def test_the_deployed_model_is_a_dvc_artifact_fetched_from_the_remote(repo: Path, tmp_path: Path) -> None:
    """`dvc artifacts get` from a fresh clone of the committed project, through its local remote."""
    run(["dvc", "remote", "add", "-f", "-d", "store", str(tmp_path / "remote")], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "remote"], repo)
    run(["dvc", "push", "-q"], repo)
    # A model version is a Git tag in the model registry's format (what `gto register` writes).
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "tag", "-a", "kd-student@v0.1.0", "-m", "v0.1.0"], repo)
    got = tmp_path / "got"
    run(["dvc", "artifacts", "get", str(repo), "kd-student", "--rev", "v0.1.0", "-o", str(got)], tmp_path)
    for name in ("model.onnx", "MODEL_CARD.md", "preprocessing.json"):
        assert (got / name).read_bytes() == (repo / "export" / name).read_bytes(), name


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
        "<script>window.onerror = function (m) { document.title = 'JSERROR ' + m; };"
        " window.addEventListener('load', function () { var all = Array.from(document.images);"
        " var drawn = all.filter(function (i) { return i.complete && i.naturalWidth > 0; });"
        " document.documentElement.setAttribute('data-images', drawn.length + '/' + all.length); });</script>"
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
    run(["dvc", "plots", "show", "--html-template", str(template), "--out", "html_show"], repo)
    pages["show"] = repo / "html_show" / "index.html"
    run(["dvc", "plots", "diff", "HEAD", "--html-template", str(template), "--out", "html_diff"], repo)
    pages["diff"] = repo / "html_diff" / "index.html"
    for kind, page in pages.items():
        html = page.read_text()
        expected = html.count("vegaEmbed(")
        assert expected >= 6, f"{kind}: only {expected} plots declared"
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
        drawn_images, images = map(int, re.search(r'data-images="(\d+)/(\d+)"', dom).groups())
        assert drawn_images == images, f"{kind}: {drawn_images} of {images} images drew"
        # the default view's pictures: accuracy against latency, int8 error per layer
        assert images >= 2 or kind == "diff", f"{kind}: only {images} images on the page"

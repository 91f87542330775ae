"""Does bfloat16 training pay on this CPU? Speed and accuracy of fp32 against bf16 autocast, one run:

    python benchmarks/train_precision.py [--prepared data/prepared] [--params params.yaml]
        [--models cifar_resnet8] [--modes fp32 bf16] [--seeds 0 1] [--epochs 3]
        [--train-limit N] [--out results/NAME]

Why it exists: issue 40 asks whether bf16 autocast (AMX or AVX-512 BF16 kernels) makes the CIFAR
records affordable, and a setting must not trade accuracy for speed unseen. `step_cost.py`
measured the speed of one step on random inputs; this trains for real, with the pipeline's own
loop (`kd_pipeline.train.training.fit`: the baseline role's `train` params from `--params`, its
optimizer, schedule, best-epoch keeping), on a prepared split (`dvc repro prepare` makes
`data/prepared` from the data params), once per model × seed × mode. bf16 switches on the loop's
own mixed-precision path, which CUDA runs today: each training step's forward pass under
`torch.autocast(dtype=torch.bfloat16)`, weights, gradients, optimizer and validation in fp32,
which is what a `train.precision: bf16` setting would do on the CPU.
Every finished model is then scored the same way, in fp32 on validation (what decides) and
test (what reports). Each seed pairs its bf16 run with its fp32 run; the fp32 seed-to-seed spread
is printed beside it for scale (one pair per seed is no interval: more seeds say more). Prints
the wall time of each `fit` and bf16's speed-up over fp32 from the same run; with --out writes
result.json and run.json (CPU, ISA, kernels) there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest.mock import patch

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kd_pipeline.core.data import Normalizer, Split, load_meta, load_split  # noqa: E402
from kd_pipeline.core.evaluation import classification_metrics, decide, predict_logits  # noqa: E402
from kd_pipeline.core.models import create_model  # noqa: E402
from kd_pipeline.core.params import load_params  # noqa: E402
from kd_pipeline.train import training  # noqa: E402
from kd_pipeline.train.training import fit, seed_everything  # noqa: E402

MODES = ("fp32", "bf16")


def limited(split: Split, limit: int | None) -> Split:
    """The first `limit` rows of a split (all with None): a shorter run for a first answer."""
    return split if not limit or limit >= len(split) else Split(split.images[:limit], split.labels[:limit])


def scores(model: torch.nn.Module, splits: dict[str, Split], normalizer: Normalizer, num_classes: int
           ) -> dict[str, float]:
    """Accuracy per split, in fp32 whatever the model trained in (how the pipeline scores models)."""
    out = {}
    for name, split in splits.items():
        logits = predict_logits(model, split, normalizer)
        out[f"{name}_accuracy"] = classification_metrics(
            split.labels, decide(logits.numpy(), split.multilabel), num_classes)["accuracy"]
    return out


@contextmanager
def bf16_steps(enabled: bool) -> Iterator[None]:
    """The training loop's own bf16 path switched on for the CPU: `fit` autocasts each training
    step's forward pass to bfloat16 when its `_Teaching.use_amp` is set (today: on CUDA only), and
    validation stays fp32. An autocast around `fit` would not do: the step's own
    `autocast(enabled=False)` switches it off again inside."""
    if not enabled:
        yield
        return
    original = training._Teaching

    def teaching(*args: Any) -> Any:
        return original(*args[:-1], True)  # the last field is use_amp

    with patch.object(training, "_Teaching", teaching):
        yield


def train_once(model_name: str, mode: str, seed: int, data: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """One `fit` of `model_name` from scratch in `mode`; its wall seconds and fp32 scores."""
    seed_everything(seed)
    meta, normalizer = data["meta"], data["normalizer"]
    model = create_model(model_name, meta.num_classes)
    run_cfg = cfg.model_copy(update={"seed": seed})
    started = time.perf_counter()
    with bf16_steps(mode == "bf16"):
        result = fit(model, data["train"], data["val"], run_cfg, normalizer, meta.num_classes,
                     name=f"{model_name} {mode} seed {seed}")
    seconds = time.perf_counter() - started
    row = {"model": model_name, "mode": mode, "seed": seed, "fit_s": round(seconds, 2),
           "epochs": result.epochs_run, "best_epoch": result.best_epoch,
           "last_train_loss": result.history[-1]["train/loss"],
           **scores(model, {"val": data["val"], "test": data["test"]}, normalizer, meta.num_classes)}
    print(f"{model_name} {mode} seed {seed}: {seconds:.1f} s, val {row['val_accuracy']:.4f},"
          f" test {row['test_accuracy']:.4f}", flush=True)
    return row


def compare(rows: list[dict[str, Any]], model_name: str) -> dict[str, Any]:
    """bf16 against fp32 for one model, seed by seed: speed-up and accuracy differences."""
    by = {(r["mode"], r["seed"]): r for r in rows if r["model"] == model_name}
    seeds = sorted({seed for mode, seed in by if mode == "bf16" and ("fp32", seed) in by})
    out: dict[str, Any] = {"model": model_name, "seeds": seeds}
    if not seeds:
        return out
    out["speedup_bf16"] = [round(by["fp32", s]["fit_s"] / by["bf16", s]["fit_s"], 3) for s in seeds]
    for split in ("val", "test"):
        key = f"{split}_accuracy"
        out[f"bf16_minus_fp32_{key}"] = [round(by["bf16", s][key] - by["fp32", s][key], 4) for s in seeds]
        fp32 = [by["fp32", s][key] for s in seeds]
        out[f"fp32_seed_spread_{key}"] = round(max(fp32) - min(fp32), 4)
    out["median_speedup_bf16"] = statistics.median(out["speedup_bf16"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--models", nargs="+", default=["cifar_resnet8"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from kd_pipeline.core.errors import PipelineError
    from kd_pipeline.evaluate.machine import cpu_info, describe

    try:
        meta = load_meta(args.prepared)
        cfg = load_params(args.params).train_for("baseline").model_copy(
            update={"epochs": args.epochs, "early_stopping_patience": 0})
        data = {"meta": meta, "normalizer": Normalizer(meta.mean, meta.std, torch.device("cpu"), False),
                "train": limited(load_split(args.prepared, "train"), args.train_limit),
                "val": load_split(args.prepared, "val"), "test": load_split(args.prepared, "test")}
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"CPU: {describe(cpu_info())}, {torch.get_num_threads()} threads;"
          f" {len(data['train'])} training images, {args.epochs} epochs", flush=True)
    rows = [train_once(name, mode, seed, data, cfg)
            for name in args.models for seed in args.seeds for mode in args.modes]
    comparisons = [compare(rows, name) for name in args.models]
    for c in comparisons:
        if c["seeds"]:
            print(f"{c['model']}: bf16 {c['median_speedup_bf16']:.2f}x the speed of fp32 (median over seeds"
                  f" {c['seeds']}); bf16 - fp32 val accuracy {c['bf16_minus_fp32_val_accuracy']}, test"
                  f" {c['bf16_minus_fp32_test_accuracy']}; fp32 seed-to-seed spread val"
                  f" {c['fp32_seed_spread_val_accuracy']}, test {c['fp32_seed_spread_test_accuracy']}")
    if args.out:
        from kd_pipeline.records.provenance import benchmark_record

        result = {"prepared": str(args.prepared), "source": meta.source, "image_size": meta.image_size,
                  "train_images": len(data["train"]), "epochs": args.epochs,
                  "train": cfg.model_dump(exclude={"augment"}), "runs": rows, "comparisons": comparisons}
        benchmark_record(args.out, "benchmarks/train_precision.py", sys.argv[1:] if argv is None else argv, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

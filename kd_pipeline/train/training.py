"""The training loop shared by every role: plain training for the teacher, distillation for the rest.

What it adds over a bare loop, and why:
- teacher logits computed once for the whole training set when augmentation is off
  (the teacher's forward pass is most of a distillation step's cost);
- early stopping on a validation metric, with the best epoch's weights kept;
- resume: the full state (model, optimizer, scheduler, early stopping, RNG, history) is
  saved atomically after every epoch outside DVC's outputs, so a killed stage picks up at
  its last completed epoch and ends with the same metrics as an uninterrupted run;
- dvclive logging per epoch, replayed from the saved history on resume, including the
  gradient norm of each layer group (`grad_norm/<group>`, kd_pipeline.train.gradient_flow).
"""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kd_pipeline.core.data import Normalizer, Split, augment, class_weights, epoch_order, read_batch
from kd_pipeline.core.errors import DataError, ParamsError
from kd_pipeline.core.evaluation import classification_metrics, decide, mean_roc_auc, predict_logits
from kd_pipeline.core.files import atomic_file
from kd_pipeline.core.params import KDParams, TrainParams
from kd_pipeline.core.ranking import resolve_monitor
from kd_pipeline.train.distillation import distillation_loss, hard_loss
from kd_pipeline.train.distributed import ONE_PROCESS, Ranks, wrap
from kd_pipeline.train.gradient_flow import GradientFlow


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("train.device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def seed_everything(seed: int, num_threads: int = 0) -> None:
    """Seed every RNG and ask for deterministic kernels, so equal params give equal metrics."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def build_optimizer(model: nn.Module, cfg: TrainParams) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0
        )
    # The fused kernels update all weights in one pass: 3-4x less optimizer time on CPU.
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainParams) -> Any:
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "plateau":
        mode = "min" if cfg.monitor == "loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=cfg.gamma, patience=cfg.plateau_patience
        )
    return None


@dataclass
class EarlyStopping:
    """Tracks the best validation score; `patience` 0 means never stop early."""

    patience: int
    mode: str
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's score; True when it is the best so far."""
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


@dataclass
class FitResult:
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def best(self) -> dict[str, float]:
        return self.history[self.best_epoch - 1]


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory on CUDA, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def capture_rng() -> dict[str, Any]:
    """Every random generator a model or user code may draw from (torch CPU and CUDA, numpy,
    Python), as tensors and plain values, so the resume file loads with `weights_only=True`."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached": cached},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """The inverse of `capture_rng`: a resumed run draws the numbers the uninterrupted one would."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


class ResumeFile:
    """The per-epoch training state, kept outside DVC's outputs so it survives a re-run.

    Loaded with `weights_only=True`: tensors and plain containers only, never code.
    A state made with other params or data (a different fingerprint) is ignored.
    """

    def __init__(self, path: str | Path | None, fingerprint: str):
        self.path = Path(path) if path else None
        self.fingerprint = fingerprint

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged state costs a restart, never the run
            tqdm.write(f"resume: ignoring unreadable {self.path} ({type(err).__name__})")
            return None
        if state.get("fingerprint") != self.fingerprint:
            tqdm.write(f"resume: {self.path} was made with other params or data; starting over")
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None:
            return
        with atomic_file(self.path) as tmp:
            torch.save({**state, "fingerprint": self.fingerprint}, tmp)

    def clear(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _monitor_value(metrics: dict[str, float], monitor: str) -> float:
    if f"val/{monitor}" not in metrics:
        raise DataError(f"train.monitor = {monitor!r}: undefined on this validation split (one class only);"
                        " use accuracy or loss")
    return metrics[f"val/{monitor}"]


def shard(split: Split, ranks: Ranks) -> Split:
    """This process's contiguous rows of a split (a view: memory maps stay on disk)."""
    rows = ranks.rows(len(split))
    return Split(split.images[rows], split.labels[rows])


def predict_gathered(model: nn.Module, split: Split, normalizer: Normalizer, ranks: Ranks) -> torch.Tensor:
    """Logits for a whole split, each process predicting its share; every process gets all."""
    return ranks.gather(predict_logits(model, shard(split, ranks), normalizer))


def step_batches(
    train: Split, cfg: TrainParams, epoch: int, ranks: Ranks
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, float]]:
    """This process's rows of each global batch of `train.batch_size`, and the factor that makes
    the mean of the processes' averaged gradients the gradient of the whole batch.

    A last batch too small to give every process two images is left out (at most
    2 × processes − 1 images an epoch): BatchNorm cannot train on one image where a network's
    last stage is 1×1, as a ResNet's is at 32 px.
    """
    order = epoch_order(train, cfg.seed * 100_003 + epoch, shuffle=True, balanced=cfg.sampler == "balanced")
    for start in range(0, len(order), cfg.batch_size):
        global_idx = order[start : start + cfg.batch_size]
        if len(global_idx) < 2 * ranks.world:
            break
        idx = global_idx[ranks.rows(len(global_idx))]
        yield (idx, *read_batch(train, idx), len(idx) * ranks.world / len(global_idx))


@dataclass
class _Progress:
    """Everything a killed run needs to go on where it stopped (saved after every epoch)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    stopper: EarlyStopping
    best_state: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)

    def state(self, model: nn.Module, rngs: Any) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "early_stopping": self.stopper.__dict__.copy(),
            "best_state": self.best_state,
            "history": self.history,
            "rng": rngs,
        }


@dataclass
class _Teaching:
    """The loss of a batch: distillation from `teacher` with the loss `kd.method` names
    (kd_pipeline.train.distillation; its logits cached for the whole training split when nothing
    augments it), or the labels alone."""

    teacher: nn.Module | None
    distill: Callable[..., torch.Tensor] | None
    cached: torch.Tensor | None
    weights: torch.Tensor | None
    label_smoothing: float
    use_amp: bool

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray, epoch: int
             ) -> torch.Tensor:
        if self.teacher is None or self.distill is None:
            return hard_loss(logits, y, self.weights, self.label_smoothing)
        if self.cached is not None:
            teacher_logits = self.cached[torch.from_numpy(idx).to(x.device)]
        else:
            with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                teacher_logits = self.teacher(x).float()
        return self.distill(logits, teacher_logits, y, epoch, self.weights, self.label_smoothing)


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    cfg: TrainParams,
    normalizer: Normalizer,
    num_classes: int,
    *,
    teacher: nn.Module | None = None,
    kd: KDParams | None = None,
    live: Any = None,
    resume: ResumeFile | None = None,
    name: str = "model",
    on_epoch_end: Callable[[int], None] | None = None,
    ranks: Ranks = ONE_PROCESS, keep: Literal["best", "last"] = "best",
) -> FitResult:
    """Train `model` (distilling from `teacher` when given) and leave it at its best epoch, or at
    its last with `keep="last"` (a score that decides what ships must not also pick the epoch).

    With several `ranks`, every process calls this with the same arguments; each trains on its
    share of every batch, and all keep the same epoch. `on_epoch_end(epoch)` runs after each
    epoch's state is saved (tests stop a run there).
    """
    device = normalizer.device
    if cfg.monitor == "auto":
        cfg = cfg.model_copy(update={"monitor": resolve_monitor(cfg.monitor, train.labels)})
    weights = class_weights(train.labels, num_classes).to(device) if cfg.class_weights else None
    resume = resume or ResumeFile(None, "")
    progress = _start(model, cfg, resume, ranks, name, live)
    net = wrap(model, ranks, device)
    flow = GradientFlow(model)
    cached = None
    if teacher is not None and not cfg.augment.enabled:
        cached = predict_gathered(teacher, train, normalizer, ranks).to(device)
    distill = distillation_loss(kd, train.multilabel) if teacher is not None and kd is not None else None
    teaching = _Teaching(teacher, distill, cached, weights, cfg.label_smoothing, device.type == "cuda")

    for epoch in range(len(progress.history) + 1, cfg.epochs + 1):
        if progress.stopper.should_stop:
            break
        started = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row = _train_epoch(net, model, train, cfg, epoch, normalizer, teaching, progress.optimizer, flow, ranks, name,
                           num_classes)
        row.update(flow.epoch_means())
        row.update(_validation(model, val, normalizer, num_classes, ranks))
        row["lr"] = progress.optimizer.param_groups[0]["lr"]
        row["epoch_time_s"] = time.perf_counter() - started
        row["peak_memory_mb"] = peak_memory_mb(device)
        _end_epoch(progress, model, row, cfg, epoch)
        _log_epoch(live, row)
        tqdm.write(_summary_line(name, epoch, cfg.epochs, row, best=progress.stopper.best_epoch == epoch))
        rngs = ranks.collect(capture_rng())
        if ranks.is_main:
            resume.save(progress.state(model, rngs))
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    return _finish(progress, model, cfg, name, keep)


def _finish(progress: _Progress, model: nn.Module, cfg: TrainParams, name: str, keep: str = "best") -> FitResult:
    """The model left at its kept epoch; one line when early stopping ended the run."""
    if progress.stopper.should_stop and len(progress.history) < cfg.epochs:
        tqdm.write(
            f"{name}: early stop after epoch {len(progress.history)}: val/{cfg.monitor} has not improved"
            f" for {cfg.early_stopping_patience} epochs"
        )
    if keep == "last":  # the weights are the last epoch's already
        return FitResult(best_epoch=len(progress.history), epochs_run=len(progress.history), history=progress.history)
    model.load_state_dict(progress.best_state)
    return FitResult(best_epoch=progress.stopper.best_epoch, epochs_run=len(progress.history),
                     history=progress.history)


def _start(model: nn.Module, cfg: TrainParams, resume: ResumeFile, ranks: Ranks, name: str, live: Any) -> _Progress:
    """A fresh optimizer, scheduler and early stopping, or the saved ones of a killed run (with
    its RNG state, and its curves written again: DVC removed the old dvclive output)."""
    optimizer = build_optimizer(model, cfg)
    progress = _Progress(
        optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg),
        stopper=EarlyStopping(cfg.early_stopping_patience, "min" if cfg.monitor == "loss" else "max"),
        best_state={k: v.detach().clone() for k, v in model.state_dict().items()},
    )
    saved = ranks.share(resume.load() if ranks.is_main else None)
    if saved is None:
        return progress
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if progress.scheduler is not None:
        progress.scheduler.load_state_dict(saved["scheduler"])
    progress.stopper = EarlyStopping(**saved["early_stopping"])
    progress.best_state = saved["best_state"]
    progress.history = saved["history"]
    rng = saved["rng"]
    restore_rng(rng[ranks.rank] if isinstance(rng, list) else rng)
    tqdm.write(f"{name}: resuming after epoch {len(progress.history)} from {resume.path}")
    for row in progress.history:
        _log_epoch(live, row)
    return progress


def _train_epoch(
    net: nn.Module, model: nn.Module, train: Split, cfg: TrainParams, epoch: int, normalizer: Normalizer,
    teaching: _Teaching, optimizer: torch.optim.Optimizer, flow: GradientFlow, ranks: Ranks, name: str,
    num_classes: int,
) -> dict[str, float]:
    """One pass over this process's share of the training split; the epoch's training metrics."""
    device = normalizer.device
    model.train()
    augment_rng = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    loss_sum, preds, targets = 0.0, [], []
    progress = tqdm(
        step_batches(train, cfg, epoch, ranks),
        total=-(-len(train) // cfg.batch_size),
        desc=f"{name} {epoch}/{cfg.epochs}",
        leave=False,
        disable=None if ranks.is_main else True,
    )
    for idx, images, labels, scale in progress:
        if cfg.augment.enabled:
            images = augment(images, cfg.augment, augment_rng)
        x = normalizer(images)
        y = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=teaching.use_amp):
            logits = net(x)
        loss = teaching.loss(logits, x, y, idx, epoch)
        optimizer.zero_grad(set_to_none=True)
        (loss * scale if scale != 1.0 else loss).backward()
        flow.record()
        optimizer.step()
        loss_sum += loss.item() * len(labels)
        preds.append(decide(logits.detach().float().cpu().numpy(), train.multilabel))
        targets.append(labels.numpy())
        progress.set_postfix(loss=f"{loss.item():.3f}")
    ranks.sync_buffers(model)
    return _epoch_row(epoch, loss_sum, preds, targets, num_classes, ranks)


def _end_epoch(progress: _Progress, model: nn.Module, row: dict[str, float], cfg: TrainParams, epoch: int) -> None:
    """Keep the best weights so far (by the monitored validation metric) and step the schedule."""
    if progress.stopper.update(_monitor_value(row, cfg.monitor), epoch):
        progress.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if isinstance(progress.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        progress.scheduler.step(_monitor_value(row, cfg.monitor))
    elif progress.scheduler is not None:
        progress.scheduler.step()
    progress.history.append(row)


def _epoch_row(
    epoch: int, loss_sum: float, preds: list[np.ndarray], targets: list[np.ndarray], num_classes: int, ranks: Ranks
) -> dict[str, float]:
    """Training loss and metrics of an epoch, over every process's rows."""
    parts = ranks.collect((loss_sum, np.concatenate(preds), np.concatenate(targets)))
    seen = sum(len(p[2]) for p in parts)
    metrics = classification_metrics(
        np.concatenate([p[2] for p in parts]), np.concatenate([p[1] for p in parts]), num_classes
    )
    return {"epoch": float(epoch), "train/loss": sum(p[0] for p in parts) / seen,
            **{f"train/{k}": v for k, v in metrics.items()}}


def _validation(
    model: nn.Module, val: Split, normalizer: Normalizer, num_classes: int, ranks: Ranks
) -> dict[str, float]:
    """Validation loss and metrics; with several processes each predicts its share, and all
    decide on the same gathered logits."""
    val_logits = predict_gathered(model, val, normalizer, ranks)
    row = {"val/loss": float(hard_loss(val_logits, torch.from_numpy(val.labels)).item())}
    val_metrics = classification_metrics(val.labels, decide(val_logits.numpy(), val.multilabel), num_classes)
    row.update({f"val/{k}": v for k, v in val_metrics.items()})
    auc = mean_roc_auc(val.labels, val_logits.numpy())
    if np.isfinite(auc):  # undefined when the validation split holds a single class
        row["val/roc_auc"] = auc
    return row


# Measured, not computed: printed in each epoch's line and kept in the fit's history, but never
# logged to dvclive, whose folder is a cached DVC output that must be the same on every run.
TIMING = ("epoch_time_s", "peak_memory_mb")


def _log_epoch(live: Any, row: dict[str, float]) -> None:
    if live is None:
        return
    for key, value in row.items():
        if key != "epoch" and key not in TIMING:
            live.log_metric(key, value)
    live.next_step()


def _summary_line(name: str, epoch: int, epochs: int, row: dict[str, float], best: bool) -> str:
    return (
        f"{name} epoch {epoch}/{epochs}"
        f" | train loss {row['train/loss']:.4f} acc {row['train/accuracy']:.4f}"
        f" | val loss {row['val/loss']:.4f} acc {row['val/accuracy']:.4f} f1 {row['val/f1']:.4f}"
        f" | lr {row['lr']:.2e} | {row['epoch_time_s']:.1f}s | {row['peak_memory_mb']:.0f} MB"
        + (" *best" if best else "")
    )


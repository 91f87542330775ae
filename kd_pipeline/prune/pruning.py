"""Pruning that shows up in bytes and milliseconds, and the prune stage's driver.

- Structured pruning removes whole channels with Torch-Pruning's dependency graph, so the
  result is a smaller dense network (fewer parameters and MACs, faster on any CPU). For timm
  ViTs it narrows the embedding, every attention head and the MLP hidden layer.
- Unstructured pruning zeroes single weights; it is reported with its sparsity and does
  not make dense inference faster (the tensors keep their shapes).
- It starts from the best small model on validation and distils only from teachers that beat
  it (kd_pipeline.prune.origin).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import Attention
from torch import nn
from torch.nn.utils import prune as torch_prune

from kd_pipeline.core.data import Split
from kd_pipeline.core.errors import CompressionError
from kd_pipeline.core.models import (
    count_macs,
    count_parameters,
    load_checkpoint,
    move_to_device,
    save_checkpoint,
    sync_attention,
)
from kd_pipeline.core.params import Params, PruneParams, fingerprint
from kd_pipeline.core.paths import DEFAULT_LAYOUT, Layout
from kd_pipeline.core.ranking import decision_metric
from kd_pipeline.core.roles import ABOVE_STUDENT, PRUNED, SMALL_MODELS
from kd_pipeline.prune.origin import choose_origin
from kd_pipeline.train.distributed import Ranks, session
from kd_pipeline.train.finetune import cpu_scores, device_normalizer, fine_tune, load_teachers, prepared_run, stage_live
from kd_pipeline.train.training import resolve_device


def _importance(name: str) -> Any:
    import torch_pruning as tp

    return {
        "l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "l2": lambda: tp.importance.MagnitudeImportance(p=2),
        "lamp": lambda: tp.importance.LAMPImportance(p=2),
        "fpgm": lambda: tp.importance.FPGMImportance(),
        "random": lambda: tp.importance.RandomImportance(),
    }[name]()


def layers_to_keep(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """The classifier plus the named layers; an unknown name is an error that lists real ones."""
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        examples = ", ".join(n for n, m in modules.items() if isinstance(m, nn.Conv2d))
        raise CompressionError(
            f"prune.keep_layers: no layer named {', '.join(unknown)}; layers with channels: {examples[:300]}"
        )
    return [model.get_classifier(), *(modules[n] for n in names)]


def prune_channels(model: nn.Module, input_size: list[int], cfg: PruneParams) -> nn.Module:
    """Remove `cfg.ratio` of the channels (dependency-aware), in `cfg.iterative_steps` steps."""
    import torch_pruning as tp

    example = torch.zeros(1, *input_size)
    # Vision transformers: Torch-Pruning narrows each head of a qkv projection alike (heads kept),
    # and the attention blocks are told their new head size after every step.
    heads = {m.qkv: m.num_heads for m in model.modules() if isinstance(m, Attention)}
    try:
        pruner = tp.pruner.MetaPruner(
            model.eval(),
            example,
            importance=_importance(cfg.importance),
            global_pruning=cfg.global_pruning,
            pruning_ratio=cfg.ratio,
            iterative_steps=cfg.iterative_steps,
            ignored_layers=layers_to_keep(model, cfg.keep_layers),
            round_to=cfg.round_to or None,
            num_heads=heads,
            prune_head_dims=bool(heads),
            prune_num_heads=False,
        )
        for _ in range(cfg.iterative_steps):
            pruner.step()
            sync_attention(model)
        model(example)  # the pruned graph must still run
    except CompressionError:
        raise
    except Exception as err:  # Torch-Pruning raises many kinds on graphs it cannot trace
        raise CompressionError(
            f"Torch-Pruning cannot prune {type(model).__name__}: {type(err).__name__}: {str(err).splitlines()[0]}"
            " (try prune.method: unstructured, or list the offending layers in prune.keep_layers)"
        ) from None
    return model


def prune_weights(model: nn.Module, cfg: PruneParams) -> nn.Module:
    """Zero the smallest weights of every conv and linear layer (global or per layer), masks kept."""
    targets = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if cfg.global_pruning:
        torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=cfg.ratio)
    else:
        for module, name in targets:
            torch_prune.l1_unstructured(module, name, amount=cfg.ratio)
    return model


def make_pruning_permanent(model: nn.Module) -> nn.Module:
    """Fold unstructured masks into the weights so the state dict has plain `weight` tensors."""
    for module in model.modules():
        if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
            torch_prune.remove(module, "weight")
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over conv and linear layers."""
    total = zeros = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            total += module.weight.numel()
            zeros += int((module.weight == 0).sum())
    return zeros / max(total, 1)


def prune_student(params: Params, layout: Layout = DEFAULT_LAYOUT) -> dict[str, Any]:
    """Prune the best small model on validation, fine-tune it by distillation from the teachers
    that beat it (or on the labels alone), write models/pruned."""
    student_train = params.train_for(PRUNED)  # the student's budget, with its own train keys
    with session(resolve_device(student_train.device)) as (ranks, device):
        return _prune_student(params, layout, ranks, device)


def _measure(
    model: nn.Module, card: dict[str, Any], splits: dict[str, Split], num_classes: int, before: dict[str, int]
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """The pruned model's metrics per split, and its size and sparsity against `before`."""
    scores = cpu_scores(model, card, splits, num_classes)
    summary = {
        "sparsity": sparsity(model),
        "parameters_before": before["parameters"], "parameters_after": count_parameters(model),
        "macs_before": before["macs"], "macs_after": count_macs(model, card["input_size"]),
    }
    return scores, summary


def _prune_student(params: Params, layout: Layout, ranks: Ranks, device: torch.device) -> dict[str, Any]:
    cfg = params.prune
    student_train = params.train_for(PRUNED)
    run = prepared_run(layout, student_train)
    metric = decision_metric(params.train.monitor, run.train.labels)
    origin = choose_origin({r: layout.model_dir(r) for r in (*SMALL_MODELS, *ABOVE_STUDENT)}, metric,
                           params.kd.learn_from)
    if ranks.is_main:
        print(f"prune: {origin.reason}")
    model, card = load_checkpoint(layout.model_dir(origin.source), num_classes=run.meta.num_classes)
    before = {"parameters": count_parameters(model), "macs": count_macs(model, card["input_size"])}
    if cfg.method == "structured":
        prune_channels(model, card["input_size"], cfg)
    else:
        prune_weights(model, cfg)
    teachers = load_teachers(origin.teachers, params, run, device)
    model = move_to_device(model, device)
    finetune = student_train.model_copy(
        update={"epochs": max(cfg.epochs, 1), "lr": cfg.lr, "scheduler": "cosine"}
    )
    kd_read = teachers.loss_reads()
    with stage_live(layout.metrics / PRUNED, ranks) as live:
        params_hash = fingerprint(card["params_hash"], cfg, kd_read, finetune, origin.as_card())
        with fine_tune(PRUNED, model, finetune, teachers, device_normalizer(card["mean"], card["std"], device),
                       params_hash, run, live=live, ranks=ranks, train=cfg.epochs > 0, keep=cfg.keep):
            if live is None:
                return {}  # only the first process measures and writes
            live.log_params({f"prune.{k}": v for k, v in cfg.model_dump().items() if k != "keep_layers"}
                            | {"prune.source": origin.source, "prune.teacher": "+".join(origin.teachers)})
            model = make_pruning_permanent(model.to("cpu"))
            scores, summary = _measure(model, card, {"val": run.val, "test": run.test}, run.meta.num_classes, before)
            for key, value in {**summary, **{f"test/{k}": v for k, v in scores["test"].items()}}.items():
                live.log_metric(key, value, plot=False)
            save_checkpoint(model, layout.model_dir(PRUNED), {
                **card,
                "role": PRUNED,
                "teacher": "+".join(origin.teachers),
                "origin": origin.as_card(),
                "channel_pruned": cfg.method == "structured",
                "compression": {"prune": cfg.model_dump(), **summary},
                "num_parameters": summary["parameters_after"],
                "val_metrics": scores["val"],
                "test_metrics": scores["test"],
                "params_hash": fingerprint(card["params_hash"], cfg, kd_read, origin.as_card()),
            })
    return {**summary, **scores["test"], "source": origin.source}

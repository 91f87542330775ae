"""Typed schema for params.yaml, checked before any stage does work.

Every stage validates the whole file first, so a typo in any group fails fast with one
line that names the key, the value and what is allowed, and nothing is written.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kd_pipeline.core.errors import ParamsError
from kd_pipeline.core.roles import ARCHITECTURE_OF, CHAIN


class _Group(BaseModel):
    """A params group: unknown keys are errors, and types are not coerced from strings."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


MEDMNIST_2D = (
    "pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
    "breastmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist",
)


class DataParams(_Group):
    name: Literal["digits", "medmnist", "cifar10", "cifar100", "imagefolder"] = "digits"
    subset: str | None = None  # the MedMNIST set, e.g. breastmnist
    medmnist_size: Literal[28, 64, 128, 224] = 28
    root: str | None = None
    download: bool = False
    image_size: int = Field(32, ge=8, le=1024)
    resize: Literal["stretch", "pad"] = "stretch"  # pad: keep the aspect ratio (image folders)
    on_corrupt: Literal["skip", "fail"] = "skip"
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(42, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> DataParams:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g}"
                " leaves too little training data; keep the sum below 0.9"
            )
        if self.name == "medmnist" and self.subset not in MEDMNIST_2D:
            raise ValueError(f"subset {self.subset!r} is not a 2D MedMNIST set; allowed: {', '.join(MEDMNIST_2D)}")
        if self.name != "medmnist" and self.subset is not None:
            raise ValueError(f"subset is only for data.name medmnist (name is {self.name!r}); set it to null")
        return self


@functools.cache
def _timm_model_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


class ModelParams(_Group):
    model: str
    pretrained: bool = False
    pretrained_file: str | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    # The role's own input size (teacher and assistant): it trains, teaches and is evaluated on the
    # prepared images upsampled to this size inside the model (core.models.Resized), so a teacher
    # can see more pixels than its student. None: the data's size (data.image_size).
    image_size: int | None = Field(None, ge=8, le=1024)
    # Keys of the shared `train` group that this role trains with instead (checked against
    # TrainParams by Params.train_for), e.g. a longer budget for the teacher.
    train: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _known_to_timm(cls, name: str) -> str:
        import timm

        from kd_pipeline.core import cifar_networks  # noqa: F401  (its names are timm names too)

        architecture = name.split(".", 1)[0]
        if not timm.is_model(architecture):
            close = difflib.get_close_matches(architecture, _timm_model_names(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
            raise ValueError(f"not a timm model name{hint}")
        return name


class AugmentParams(_Group):
    color_jitter: bool = False
    brightness: float = Field(0.2, ge=0, le=1)
    contrast: float = Field(0.2, ge=0, le=1)
    saturation: float = Field(0.2, ge=0, le=1)
    hflip: bool = False
    vflip: bool = False
    crop_padding: int = Field(0, ge=0, le=64)  # random crop after padding by this many pixels; 0: off

    @property
    def enabled(self) -> bool:
        return self.color_jitter or self.hflip or self.vflip or self.crop_padding > 0


class TrainParams(_Group):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(0.003, gt=0, le=10)
    weight_decay: float = Field(0.0005, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["cosine", "step", "plateau", "none"] = "cosine"
    step_size: int = Field(5, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)
    plateau_patience: int = Field(2, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    early_stopping_patience: int = Field(0, ge=0)
    # auto: roc_auc for multi-label data, balanced_accuracy when the training split is imbalanced
    # (largest class > 1.5x the smallest), accuracy otherwise (kd_pipeline.core.ranking). The same
    # metric, on validation, ranks models everywhere the pipeline chooses one.
    monitor: Literal["auto", "accuracy", "balanced_accuracy", "f1", "roc_auc", "loss"] = "auto"
    class_weights: bool = False
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    augment: AugmentParams = Field(default_factory=AugmentParams)
    seed: int = Field(0, ge=0)
    num_threads: int = Field(0, ge=0)
    # Data-parallel training: more than one process in all runs the training stages under
    # torchrun with DistributedDataParallel (kd_pipeline.train.distributed); the global batch stays
    # batch_size. Several machines meet at rdzv_endpoint, node 0's host:port.
    nproc_per_node: int = Field(1, ge=1, le=1024)
    nnodes: int = Field(1, ge=1, le=4096)
    rdzv_endpoint: str | None = None

    @model_validator(mode="after")
    def _distributed(self) -> TrainParams:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes = {self.nnodes} needs rdzv_endpoint: node 0's host:port, e.g. 10.0.0.1:29500")
        if self.rdzv_endpoint is not None and not re.fullmatch(r"[\w.\-\[\]:]+:\d{1,5}", self.rdzv_endpoint):
            raise ValueError(f"rdzv_endpoint {self.rdzv_endpoint!r} is not host:port")
        if self.batch_size < 2 * self.nproc_per_node * self.nnodes:
            raise ValueError(
                f"batch_size {self.batch_size} gives some of the {self.nproc_per_node * self.nnodes} processes fewer"
                " than 2 images a step; raise batch_size or lower nproc_per_node × nnodes"
            )
        return self


class DKDParams(_Group):
    """Decoupled KD (Zhao et al., CVPR 2022): target-class (TCKD) and non-target-class (NCKD) terms
    weighted apart, ramped in over `warmup` epochs; the paper's CIFAR-100 defaults (β 0.5 on ImageNet)."""

    alpha: float = Field(1.0, ge=0)  # TCKD weight
    beta: float = Field(8.0, ge=0)  # NCKD weight
    warmup: int = Field(20, ge=0)  # epochs over which the KD term's weight rises linearly to 1 (0: at once)


class DISTParams(_Group):
    """DIST (Huang et al., NeurIPS 2022): Pearson correlation between the student's and the
    teacher's tempered probabilities, across classes (inter) and across the batch (intra);
    the paper's ImageNet defaults."""

    beta: float = Field(1.0, ge=0)  # inter-class relation weight
    gamma: float = Field(1.0, ge=0)  # intra-class relation weight
    tau: float = Field(1.0, gt=0)  # its temperature (kd.temperature is the KD and DKD one)


class KDParams(_Group):
    # the distillation loss (kd_pipeline.train.distillation.METHODS): kd (Hinton), dkd, dist
    method: Literal["kd", "dkd", "dist"] = "kd"
    # z-score each image's logits before any method's soft term (Sun et al., CVPR 2024)
    logit_standardization: bool = False
    alpha: float = Field(0.7, ge=0, le=1)  # kd: weight of the soft term, 1 − alpha on the labels
    temperature: float = Field(4.0, gt=0)  # kd and dkd
    # true: stop instead of distilling from a teacher less accurate on validation than the
    # student trained alone (the baseline); false: say so in one line and go on
    require_better_teacher: bool = False
    # nearest: the student learns from the assistant (teacher-assistant KD); all_above: from the
    # assistant and the teacher together (densely guided KD), also in the prune fine-tune
    learn_from: Literal["nearest", "all_above"] = "nearest"
    dkd: DKDParams = Field(default_factory=DKDParams)
    dist: DISTParams = Field(default_factory=DISTParams)

    def read_by_loss(self) -> dict[str, Any]:
        """The keys the loss reads: with the default Hinton KD exactly the keys it always read, so
        adding a method changes no existing run's fingerprint."""
        keys = {"alpha", "temperature", "require_better_teacher", "learn_from"}
        if self.method != "kd" or self.logit_standardization:
            keys |= {"method", "logit_standardization", self.method} - {"kd"}
        return self.model_dump(include=keys)


class PruneParams(_Group):
    method: Literal["structured", "unstructured"] = "structured"
    ratio: float = Field(0.5, gt=0, lt=1)
    importance: Literal["l1", "l2", "lamp", "fpgm", "random"] = "l2"
    global_pruning: bool = False
    keep_layers: list[str] = Field(default_factory=list)
    iterative_steps: int = Field(1, ge=1)
    round_to: int = Field(8, ge=0)
    epochs: int = Field(5, ge=0)
    lr: float = Field(0.001, gt=0, le=10)
    # last: the fine-tune's final epoch, so the validation split that decides deployment did not
    # also pick it; best: the best epoch on validation (optimistic where validation is small)
    keep: Literal["last", "best"] = "last"


class QuantizeParams(_Group):
    # qat: static PTQ as well, plus the pruned student fine-tuned with int8 rounding (pruned_qat)
    method: Literal["static", "dynamic", "qat"] = "static"
    calibration_batches: int = Field(8, ge=1)
    calibration_batch_size: int = Field(32, ge=1)
    per_channel: bool = True
    seed: int = 0  # of the class-stratified calibration sample
    # share of conv/matmul MACs ONNX Runtime must run in integer kernels (QLinearConv, QGemm, ...);
    # accuracy control (kd_pipeline.quantize.mixed_precision) keeps layers in float only down to this share
    min_integer_mac_share: float = Field(0.8, ge=0, le=1)
    qat_epochs: int = Field(3, ge=1)  # quantization-aware fine-tune of the pruned student (method qat)
    qat_lr: float = Field(0.0001, gt=0, le=10)
    # int8 may ship only when its validation accuracy, balanced accuracy and the run's decision
    # metric each lose at most this much against its float source (kd_pipeline.evaluate.fidelity)
    max_accuracy_drop: float = Field(0.01, ge=0, le=1)


class EvaluateParams(_Group):
    num_threads: int = Field(1, ge=1)
    warmup: int = Field(10, ge=0)
    repeats: int = Field(50, ge=1)
    throughput_batch: int = Field(64, ge=1)


class TargetsParams(_Group):
    """Checked for the deployed variant: accuracy against the reference, cost against the teacher."""

    # best_small: the most accurate float model of the student's architecture (student, direct,
    # baseline), the one compression starts from; best_float: the most accurate float model
    # (teacher and assistant too); teacher: the teacher, whatever its accuracy
    reference: Literal["best_small", "best_float", "teacher"] = "best_small"
    max_accuracy_drop: float = Field(0.01, ge=0, le=1)
    min_speedup: float = Field(0.40, ge=0)  # 0.40: batch-1 latency at least 1.4x lower
    min_size_reduction: float = Field(0.30, ge=0, lt=1)  # 0.30: file at least 30% smaller


class ExportParams(_Group):
    select: Literal["smallest", "fastest", "most_accurate"] = "smallest"
    max_float_diff: float = Field(1e-4, gt=0)  # ONNX vs PyTorch logits, float models


class VisualizeParams(_Group):
    """Pictures of where the models look (Grad-CAM for CNNs, CLS attention for ViTs)."""

    images: int = Field(8, ge=1, le=64)  # test images drawn: some correct, some the deployed variant misses
    agreement_images: int = Field(1000, ge=0)  # test images the agreement metric averages over; 0: all
    top_fraction: float = Field(0.2, gt=0, lt=1)  # share of pixels in the top-overlap metric
    feature_channels: int = Field(4, ge=1, le=16)  # channels drawn per stage in the feature-map plot
    seed: int = 0


# Higher-is-better quality metrics that evaluate writes for every variant (metrics/evaluate.json).
GATE_METRICS = ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "exact_match")


class GateParams(_Group):
    """The pull-request gate: a watched metric of a variant may not fall by more than its allowance,
    max(`tolerance`, `seed_sds` × √2 × its seed-to-seed standard deviation when measured)."""

    tolerance: float = Field(0.01, ge=0)
    seed_sds: float = Field(2.0, ge=0)
    watch: list[str] = Field(default_factory=lambda: ["accuracy", "balanced_accuracy", "f1", "roc_auc"])

    @field_validator("watch")
    @classmethod
    def _known_metrics(cls, watch: list[str]) -> list[str]:
        unknown = [name for name in watch if name not in GATE_METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; allowed: {', '.join(GATE_METRICS)}")
        return watch


class Params(_Group):
    data: DataParams = Field(default_factory=DataParams)
    teacher: ModelParams = Field(default_factory=lambda: ModelParams(model="resnet50"))
    assistant: ModelParams = Field(default_factory=lambda: ModelParams(model="resnet34"))
    student: ModelParams = Field(default_factory=lambda: ModelParams(model="resnet18"))
    train: TrainParams = Field(default_factory=TrainParams)
    kd: KDParams = Field(default_factory=KDParams)
    prune: PruneParams = Field(default_factory=PruneParams)
    quantize: QuantizeParams = Field(default_factory=QuantizeParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    targets: TargetsParams = Field(default_factory=TargetsParams)
    export: ExportParams = Field(default_factory=ExportParams)
    gate: GateParams = Field(default_factory=GateParams)
    visualize: VisualizeParams = Field(default_factory=VisualizeParams)

    def role(self, role: str) -> ModelParams:
        """The model params of a role: its own group, or the student's for direct, baseline and pruned."""
        if role not in ARCHITECTURE_OF:
            raise ParamsError(f"unknown role {role!r}; allowed: {', '.join(ARCHITECTURE_OF)}")
        return getattr(self, ARCHITECTURE_OF[role])

    def train_for(self, role: str) -> TrainParams:
        """The shared `train` group with the role's own `train` keys on top (nested `augment` merged)."""
        override = self.role(role).train
        if not override:
            return self.train
        merged = self.train.model_dump()
        for key, value in override.items():
            if key == "augment" and isinstance(value, dict):
                merged["augment"] = {**merged["augment"], **value}
            else:
                merged[key] = value
        return TrainParams.model_validate(merged)


def _format_error(
    err: ValidationError, source: str, root: type[BaseModel] | None = None, prefix: tuple[str, ...] = ()
) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in (*prefix, *first["loc"]))
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        parent = _model_at(first["loc"][:-1], root or Params)
        allowed = ", ".join(parent.model_fields) if parent else "see params.yaml"
        return f"{source}: unknown key '{key}'; allowed keys here: {allowed}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{source}: {key} = {value!r} is not allowed: {message}"


def _model_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    model: type[BaseModel] = root
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError with one line on the first problem."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of groups, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_error(err, source)) from None
    if params.student.image_size is not None:
        raise ParamsError(
            f"{source}: student.image_size = {params.student.image_size} is not allowed: the student (and the"
            " baseline, direct and pruned models of its architecture) ships at the data's size; set"
            " data.image_size instead, or null"
        )
    for role in CHAIN:  # each role's `train` keys, checked as the shared group is
        try:
            params.train_for(role)
        except ValidationError as err:
            raise ParamsError(_format_error(err, source, TrainParams, (role, "train"))) from None
    return params


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 numbers: `1e-3` is a float (PyYAML's YAML 1.1 reads it as a string)."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """YAML as DVC reads it (1.2 numbers), without executing anything."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 (a SafeLoader)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found (run from the project root)")
    try:
        raw = read_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    return parse_params(raw, str(path))


def fingerprint(*parts: Any) -> str:
    """A stable hash of params groups and other JSON-able values, for resume and model cards."""
    def to_plain(value: Any) -> Any:
        if not isinstance(value, BaseModel):
            return value
        dump = value.model_dump()
        if isinstance(value, ModelParams) and value.image_size is None:
            del dump["image_size"]  # added later: models at the data's size keep the fingerprints they had
        return dump

    blob = json.dumps([to_plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

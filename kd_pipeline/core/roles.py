"""The names of the models the pipeline trains, compresses and compares, and of their ONNX twins.

One module owns them, so that a stage, a report, a record table and a sweep cannot spell a role
two ways: a new role (or a renamed one) is an edit here, and every group below follows.
"""

from __future__ import annotations

TEACHER, ASSISTANT, STUDENT = "teacher", "assistant", "student"
DIRECT, BASELINE = "direct", "baseline"  # the student's architecture, distilled from the teacher / without KD
PRUNED = "pruned"  # the best small model, pruned and fine-tuned
QAT = "pruned_qat"  # the pruned model after quantization-aware training (quantize.method: qat)

# Teacher → assistant → student: the roles with a params group (model, image size, train keys) of their own.
CHAIN = (TEACHER, ASSISTANT, STUDENT)
# Who each trained role learns from under plain teacher-assistant KD (None: labels only).
TEACHER_OF: dict[str, str | None] = {TEACHER: None, ASSISTANT: TEACHER, STUDENT: ASSISTANT, DIRECT: TEACHER,
                                     BASELINE: None}
# The models knowledge is distilled from, the largest first; and the nearest first (whom a student-sized model
# learns from under kd.learn_from: all_above, and the order prune's origin check names them).
TEACHERS = (TEACHER, ASSISTANT)
ABOVE_STUDENT = (ASSISTANT, TEACHER)
# The student's architecture trained three ways: what compression starts from (ties go to the earlier).
SMALL_MODELS = (STUDENT, DIRECT, BASELINE)
DISTILLED = (STUDENT, DIRECT)  # the student-sized models trained by KD
FLOAT_MODELS = (*CHAIN, DIRECT, BASELINE)  # every model trained from scratch or by KD
TORCH_MODELS = (*FLOAT_MODELS, PRUNED)  # every float checkpoint under models/
# Whose params group (architecture, image size) each role uses.
ARCHITECTURE_OF = {TEACHER: TEACHER, ASSISTANT: ASSISTANT, STUDENT: STUDENT, DIRECT: STUDENT, BASELINE: STUDENT,
                   PRUNED: STUDENT}
# What each student-sized model learned from, as tables label it.
LEARNED_FROM = {STUDENT: "via the assistant", DIRECT: "from the teacher", BASELINE: "no KD"}
# The paired comparisons a seed-aggregated record answers: (arm, control, what it asks).
COMPARISONS = ((STUDENT, BASELINE, "KD through the assistant − no KD"),
               (DIRECT, BASELINE, "KD from the teacher − no KD"),
               (STUDENT, DIRECT, "what the assistant adds"))
# evaluate's headline gains: name → (arm, control).
GAINS = {"distillation_gain": (STUDENT, BASELINE), "assistant_gain": (STUDENT, DIRECT)}

# ONNX variants: <source>_onnx is a checkpoint exported in fp32, <source>_int8 its int8 quantization.
ONNX_SUFFIX, INT8_SUFFIX = "_onnx", "_int8"


def onnx_variant(source: str) -> str:
    """The fp32 ONNX variant of a checkpoint: pruned → pruned_onnx."""
    return source + ONNX_SUFFIX


def int8_variant(source: str) -> str:
    """The int8 ONNX variant of a checkpoint: pruned → pruned_int8."""
    return source + INT8_SUFFIX


def is_onnx(variant: str) -> bool:
    return variant.endswith((ONNX_SUFFIX, INT8_SUFFIX))


def is_int8(variant: str) -> bool:
    return variant.endswith(INT8_SUFFIX)


def source_of(variant: str) -> str:
    """The checkpoint a variant was made from: pruned_int8 → pruned, pruned_qat_int8 → pruned_qat."""
    return variant.removesuffix(INT8_SUFFIX).removesuffix(ONNX_SUFFIX)


TEACHER_ONNX = onnx_variant(TEACHER)  # the teacher in ONNX Runtime: the same-runtime reference for speed
REFERENCES = (TEACHER, TEACHER_ONNX)  # what speed and size are compared with, never deployed
QAT_VARIANTS = (QAT, onnx_variant(QAT), int8_variant(QAT))

"""Stage quantize: int8 ONNX (ONNX Runtime) of the student and of the pruned student, and the
teacher as fp32 ONNX (the same-runtime reference for speed)."""

from kd_pipeline.compression import quantize_variants
from kd_pipeline.errors import exit_on_pipeline_error
from kd_pipeline.params import load_params


@exit_on_pipeline_error
def main() -> None:
    quantize_variants(load_params(), sources=("student", "pruned"))


if __name__ == "__main__":
    main()

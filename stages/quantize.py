"""Stage quantize: int8 ONNX (ONNX Runtime) of the pruned model and of the small model it was made
from, and the teacher as fp32 ONNX (the same-runtime reference for speed)."""

from kd_pipeline.core.errors import exit_on_pipeline_error
from kd_pipeline.core.params import load_params
from kd_pipeline.core.stage_times import timed
from kd_pipeline.quantize.int8_variants import quantize_variants


@timed("stages.quantize")
@exit_on_pipeline_error
def main() -> None:
    quantize_variants(load_params())


if __name__ == "__main__":
    main()

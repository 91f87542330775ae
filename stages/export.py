"""Stage export: the variant evaluate chose, verified, into export/ as a deployable bundle."""

from kd_pipeline.core.errors import exit_on_pipeline_error
from kd_pipeline.core.params import load_params
from kd_pipeline.core.stage_times import timed
from kd_pipeline.export.bundle import export_deployable


@timed("stages.export")
@exit_on_pipeline_error
def main() -> None:
    result = export_deployable(load_params())
    check = (
        f"int8 validation {result['int8_val_drop_metric']} {-result['int8_val_drop']:+.4f} against float,"
        f" agreement {result['int8_agreement']:.2%} on test" if result["int8"]
        else f"max abs diff {result['max_abs_diff']:.1e}"
    )
    same = (", the graph and weights evaluate measured, labels and preprocessing added as metadata"
            if result["same_file_as_evaluated"] else "")
    targets = "meets its targets" if result["meets_targets"] else "misses a target (see reports/summary.md)"
    print(f"exported {result['variant']} ({result['onnx_mb']:.2f} MB ONNX{same}), {check}; {targets}")


if __name__ == "__main__":
    main()

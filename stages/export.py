"""Stage export: the variant evaluate chose, verified, into export/ as a deployable bundle."""

from kd_pipeline.errors import exit_on_pipeline_error
from kd_pipeline.export import export_deployable
from kd_pipeline.params import load_params


@exit_on_pipeline_error
def main() -> None:
    result = export_deployable(load_params())
    check = (
        f"agreement on {result['agreement_on']} {result['agreement']:.2%}" if result["int8"]
        else f"max abs diff {result['max_abs_diff']:.1e}"
    )
    print(f"exported {result['variant']} ({result['onnx_mb']:.2f} MB ONNX), verified: {check}")


if __name__ == "__main__":
    main()

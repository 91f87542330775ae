"""Stage evaluate: every variant on the same test split → metrics, plots, reports/summary.md."""

from pathlib import Path

from kd_pipeline.comparison import FILES_RECORD, compare, default_loaders
from kd_pipeline.data import load_meta, load_split
from kd_pipeline.errors import exit_on_pipeline_error
from kd_pipeline.params import load_params
from kd_pipeline.report import write_outputs
from kd_pipeline.teachers import teacher_warnings


@exit_on_pipeline_error
def main() -> None:
    params = load_params()
    meta = load_meta("data/prepared")
    test = load_split("data/prepared", "test")
    loaders = default_loaders(Path("models"), meta, params.evaluate.num_threads)
    result = compare(loaders, test, meta, params)
    result["evaluation"]["teacher_warnings"] = teacher_warnings(Path("models"))
    write_outputs(
        result, params, meta.class_names, test.labels.tolist(),
        Path("metrics/evaluate.json"), Path("plots"), Path("reports/summary.md"), FILES_RECORD,
    )
    evaluation = result["evaluation"]
    for line in evaluation["teacher_warnings"]:
        print(f"warning: {line}")
    print(f"deployed: {evaluation['deployed']} ({evaluation['deployed_reason']}); targets passed:"
          f" {evaluation['targets_passed']}")


if __name__ == "__main__":
    main()

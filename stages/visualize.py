"""Stage visualize: where teacher, assistant, student and the deployed model look (image plots),
their agreement with the teacher (metrics/visualize.json), feature maps and gradient flow."""

from kd_pipeline.core import paths
from kd_pipeline.core.data import load_meta, load_split
from kd_pipeline.core.errors import exit_on_pipeline_error
from kd_pipeline.core.params import load_params
from kd_pipeline.core.stage_times import timed
from kd_pipeline.visualize.visualization import visualize


@timed("stages.visualize")
@exit_on_pipeline_error
def main() -> None:
    params = load_params()
    result = visualize(params.visualize, load_split(paths.PREPARED, "test"), load_meta(paths.PREPARED))
    agreement = ", ".join(
        f"{name} {score['correlation']:.3f}" for name, score in result["agreement_with_teacher"].items()
    )
    print(f"visualize: {len(result['images'])} images drawn ({result['deployed_wrong_in_selection']} that"
          f" {result['deployed']} gets wrong); correlation of Grad-CAM/attention maps with the teacher's over"
          f" {result['agreement_images']} test images: {agreement}")


if __name__ == "__main__":
    main()

"""Stage prune: the student, channel- (or weight-) pruned, then fine-tuned by distillation."""

from kd_pipeline.core.errors import exit_on_pipeline_error
from kd_pipeline.core.params import load_params
from kd_pipeline.core.stage_times import timed
from kd_pipeline.prune.pruning import prune_student
from kd_pipeline.train.distributed import relaunch


@timed("stages.prune")
@exit_on_pipeline_error
def main() -> None:
    params = load_params()
    if relaunch(params.train_for("pruned"), ["-m", "stages.prune"], "prune"):
        return  # torchrun ran this script in every process
    result = prune_student(params)
    if not result:
        return  # a process other than the first: it printed nothing and wrote nothing
    print(
        f"pruned: {result['parameters_before'] / 1e6:.2f}M → {result['parameters_after'] / 1e6:.2f}M parameters,"
        f" {result['macs_before'] / 1e6:.1f} → {result['macs_after'] / 1e6:.1f} MMACs,"
        f" sparsity {result['sparsity']:.2f}, test accuracy {result['accuracy']:.4f}"
    )


if __name__ == "__main__":
    main()

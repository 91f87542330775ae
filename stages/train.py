"""Stages train_teacher, distill_assistant, distill_student, distill_direct, train_baseline:
`python -m stages.train ROLE`."""

import sys

from kd_pipeline.core.errors import ParamsError, exit_on_pipeline_error
from kd_pipeline.core.params import load_params
from kd_pipeline.core.roles import TEACHER_OF
from kd_pipeline.core.stage_times import timed
from kd_pipeline.train.chain import train_role
from kd_pipeline.train.distributed import relaunch


@timed("stages.train")
@exit_on_pipeline_error
def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in TEACHER_OF:
        raise ParamsError(f"usage: python -m stages.train ROLE, ROLE one of {', '.join(TEACHER_OF)}")
    params = load_params()
    if relaunch(params.train_for(argv[0]), ["-m", "stages.train", *argv], f"train-{argv[0]}"):
        return  # torchrun ran this script in every process
    test = train_role(argv[0], params)
    if test:  # the first (or only) process
        print(f"{argv[0]}: test accuracy {test['accuracy']:.4f}, macro F1 {test['f1']:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])

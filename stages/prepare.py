"""Stage prepare: dataset → resized uint8 arrays with a stratified, seeded split."""

from kd_pipeline.data import prepare
from kd_pipeline.errors import exit_on_pipeline_error
from kd_pipeline.params import load_params


@exit_on_pipeline_error
def main() -> None:
    params = load_params()
    meta = prepare(params.data, "data/prepared")
    sizes = {split: sum(counts.values()) for split, counts in meta.counts.items()}
    print(f"prepared {params.data.name}: {meta.num_classes} classes, {sizes}, {meta.image_size}px")


if __name__ == "__main__":
    main()

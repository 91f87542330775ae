"""docs/params.md written from the two places that define the params: the typed schema
(kd_pipeline.core.params: types, allowed values, bounds) and params.yaml (defaults and the comment
beside each key). A hand-written page drifted from both (a wrong default, missing keys).

    python -m kd_pipeline.params_doc          # rewrite docs/params.md
    python -m kd_pipeline.params_doc --check  # exit 1 when it is not current (the tests run this)
"""

from __future__ import annotations

import argparse
import re
import sys
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kd_pipeline.core.params import Params

PAGE = Path("docs/params.md")
PARAMS = Path("params.yaml")
INTRO = """# Parameters

Generated from the schema (`kd_pipeline/core/params.py`) and `params.yaml`'s comments by
`python -m kd_pipeline.params_doc`; a test fails when it is not current. Defaults are
`params.yaml`'s values (what `dvc repro` runs). Set one for an experiment with
`dvc exp run -S KEY=VALUE`.
"""
OUTRO = """
Every stage validates the whole file before doing any work. An unknown key, a wrong type or an
out-of-range value stops it with one line and exit code 2, for example:

```
error: params.yaml: kd.alpha = 2 is not allowed: Input should be less than or equal to 1
error: params.yaml: teacher.model = 'resnet5' is not allowed: not a timm model name; did you mean \
resnet50, resnet18, resnet26?
error: params.yaml: unknown key 'train.lrr'; allowed keys here: device, epochs, batch_size, ...
```

DVC removes a stage's outputs before running it, but keeps them in its cache: put the params
back and `dvc repro` restores them without retraining.
"""
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[\w]+):(?P<value>[^#]*)(#\s?(?P<comment>.*))?$")
COMMENT_LINE = re.compile(r"^\s+#\s?(?P<comment>.*)$")


def yaml_comments(text: str) -> dict[str, str]:
    """Dotted key → the comment on its line and the comment-only lines that continue it."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last = None
    for line in text.splitlines():
        match = KEY_LINE.match(line)
        if match:
            indent = len(match["indent"])
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, match["key"])]
            last = ".".join(k for _, k in stack)
            comments[last] = (match["comment"] or "").strip()
        elif last and (more := COMMENT_LINE.match(line)):
            comments[last] = f"{comments[last]} {more['comment'].strip()}".strip()
        elif not line.strip():
            last = None
    return comments


def allowed(field: Any) -> str:
    """The values the schema accepts, in words: choices, bounds or the type."""
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return " / ".join(str(v) for v in typing.get_args(annotation))
    bounds = []
    for item in field.metadata:
        for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, name, None) is not None:
                bounds.append(f"{sign} {getattr(item, name)}")
    kind = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return f"{kind}{', ' + ' and '.join(bounds) if bounds else ''}"


def rows(model: type[BaseModel], values: dict[str, Any], comments: dict[str, str], prefix: str = "") -> list[str]:
    """One table row per leaf key, in params.yaml's order where it has the key."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        value = values.get(name) if isinstance(values, dict) else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if comments.get(key):
                out.append(f"| `{key}` | | | {_cell(comments[key])} |")
            out += rows(annotation, value or {}, comments, f"{key}.")
            continue
        shown = value if name in (values or {}) else field.get_default(call_default_factory=True)
        if not comments.get(key) and prefix in ("assistant.", "student.") and comments.get(f"teacher.{name}"):
            comments[key] = f"as `teacher.{name}`"
        default = yaml.safe_dump(shown, default_flow_style=True).strip().removesuffix("...").strip()
        out.append(f"| `{key}` | `{_cell(default)}` | {_cell(allowed(field))} | {_cell(comments.get(key, ''))} |")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def page(params_text: str) -> str:
    values = yaml.safe_load(params_text)
    comments = yaml_comments(params_text)
    lines = [INTRO]
    for group, field in Params.model_fields.items():
        lines += [f"## `{group}`", ""]
        if comments.get(group):
            lines += [comments[group], ""]
        lines += ["| key | default | allowed | what |", "|---|---|---|---|"]
        lines += rows(field.annotation, values.get(group) or {}, comments, f"{group}.")
        lines.append("")
    return "\n".join(lines) + OUTRO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/params.md is not current")
    args = parser.parse_args(argv)
    wanted = page(PARAMS.read_text())
    if args.check:
        current = PAGE.read_text() if PAGE.is_file() else ""
        if current != wanted:
            print(f"{PAGE} is not current: run python -m kd_pipeline.params_doc", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())

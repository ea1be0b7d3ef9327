"""One placeholder syntax for every setting that names a per-model thing: `{model}`.

URLs, file paths, unit names and argv templates in the settings say `{model}` for the model's
name (and the command runtime's argv also `{revision}`, `{version}`, `{image}`,
`{spec_file}`, `{python}`). `{name}`, the spelling some settings used before, is still read
as `{model}` so that existing settings files keep working.
"""

from __future__ import annotations


def fill(template: str, model: str) -> str:
    """`template` with `{model}` (and the older `{name}`) replaced by `model`."""
    return template.replace("{model}", model).replace("{name}", model)

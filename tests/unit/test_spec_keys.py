"""The table of spec keys in docs/experiment-grids.md and the schema say the same, key by key."""

from pathlib import Path

from pydantic import BaseModel

from nnunet_dicephi.cluster.experiment import STAGES, ExperimentSpec, Resources
from nnunet_dicephi.cluster.spec import models_in, table_at

DOCS = Path(__file__).resolve().parents[2] / "docs" / "experiment-grids.md"


def default_text(key: str, field) -> str:
    """A field's default as the table writes it (TOML, in backticks); ``—`` where none is set."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None or isinstance(value, BaseModel):
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`{}`" if key == "environment.variables" else f"`[{', '.join(map(str, value))}]`"
    return f"`{value}`"


def schema_keys(model: type[BaseModel] = ExperimentSpec, prefix: str = ""):
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        inner = next(models_in(field.annotation), None)
        if inner is Resources and name in STAGES:
            if name == STAGES[0]:
                yield f"{prefix}<stage>", "—"
        elif inner is not None:
            yield from schema_keys(inner, key + ".")
        else:
            yield key, default_text(key, field)


def documented_keys():
    text = DOCS.read_text().split("\n## Every key\n", 1)[1]
    for line in text.splitlines():
        if line.startswith("| `"):
            key, default = (cell.strip() for cell in line.strip("|").split("|")[:2])
            yield key.strip("`"), default


def test_every_schema_key_is_documented_with_its_default_and_nothing_else():
    schema, docs = list(schema_keys()), list(documented_keys())
    assert len(docs) == len(set(docs)), "a key is documented twice"
    assert sorted(set(schema) - set(docs)) == [], "keys (or defaults) of the schema missing from the docs' table"
    assert sorted(set(docs) - set(schema)) == [], "keys (or defaults) in the docs' table that the schema lacks"


def test_the_table_walk_finds_every_table():
    keys = dict(schema_keys())
    assert keys["dataset.sweep.loss"] == '`"Dice"`' and keys["environment.variables"] == "`{}`"
    assert keys["resources.time"] == "`60`" and keys["dataset.folds"] == "`[0, 1, 2, 3, 4]`"
    assert table_at(("dataset", 0, "sweep", 1)).__name__ == "Sweep" and table_at(("resources", "train")) is Resources

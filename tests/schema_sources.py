"""The structured-output development set: real-world schemas that packages on the registry ship
(none written by this project) and the schemas pydantic generates for ordinary models. Used by
tests/test_structured_real_world.py and bench/schema_coverage.py."""

from __future__ import annotations

import json
from pathlib import Path

REAL_WORLD = (
    "SchemaStore (check-jsonschema)",
    "meta-schemas (jsonschema-specifications)",
    "pyproject (validate-pyproject)",
    "Jupyter notebooks (nbformat)",
    "OpenAPI (openapi-spec-validator, openapi-schema-validator)",
)


def sources() -> dict[str, list[tuple[str, dict]]]:
    import check_jsonschema
    import jsonschema_specifications
    import nbformat
    import openapi_schema_validator
    import openapi_spec_validator
    import validate_pyproject

    def files(package, pattern: str = "*.json") -> list[tuple[str, dict]]:
        base = Path(package.__file__).parent
        return [
            (str(p.relative_to(base)), json.loads(p.read_text()))
            for p in sorted(base.rglob(pattern))
            if p.is_file() and "test" not in str(p.relative_to(base))
        ]

    vendor = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor"
    store = [(p.stem, json.loads(p.read_text())) for p in sorted(vendor.glob("*.json"))]
    meta_dir = Path(jsonschema_specifications.__file__).parent / "schemas"
    meta = [
        (str(p.relative_to(meta_dir)), json.loads(p.read_text()))
        for p in sorted(meta_dir.rglob("*"))
        if p.is_file() and p.suffix in ("", ".json")
    ]
    from tests.pydantic_models import MODELS, schema_of

    return {
        "SchemaStore (check-jsonschema)": store,
        "meta-schemas (jsonschema-specifications)": meta,
        "pyproject (validate-pyproject)": files(validate_pyproject, "*.schema.json"),
        "Jupyter notebooks (nbformat)": files(nbformat, "*.schema.json"),
        "OpenAPI (openapi-spec-validator, openapi-schema-validator)": files(openapi_spec_validator)
        + files(openapi_schema_validator),
        "pydantic models (tests/pydantic_models.py)": [(m.__name__, schema_of(m)) for m in MODELS],
    }

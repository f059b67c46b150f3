"""docs/api.md is generated from the app's own OpenAPI schema and kept current."""

from __future__ import annotations

from serving.apidoc import current, main, type_of
from support import REPO


def test_docs_api_md_is_current() -> None:
    assert main(["--check", str(REPO / "docs" / "api.md")]) == 0, "run: python -m serving.apidoc --out docs/api.md"


def test_reference_covers_every_path_and_schema() -> None:
    from core.settings import Settings
    from serving.app import create_app

    spec = create_app(Settings(api_keys="docs")).openapi()
    text = current()
    for path, ops in spec["paths"].items():
        for method in ops:
            assert f"## {method.upper()} {path} " in text
    for name in spec["components"]["schemas"]:
        assert f"### {name}\n" in text
    assert "`customer_ids` | array[string [1..256]] [1..1000] | yes" in text


def test_types_render_bounds_refs_and_unions() -> None:
    assert type_of({"type": "string", "minLength": 1, "maxLength": 9}) == "string [1..9]"
    assert type_of({"$ref": "#/components/schemas/EventIn"}) == "[EventIn](#eventin)"
    assert type_of({"anyOf": [{"type": "number"}, {"type": "null"}]}) == "number \\| null"
    assert type_of({"type": "array", "items": {"type": "string", "enum": ["a"]}, "maxItems": 4}) == (
        "array[string (`a`)] [..4]"
    )

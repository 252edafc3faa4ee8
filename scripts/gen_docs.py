"""Regenerate the generated parts of docs/ from the code: the control plane's endpoints and request
bodies (its OpenAPI document and route dependencies), the error codes (sync/errors.py), the
settings (pydantic models with their descriptions) and the timing constants (sync/timing.py).

    .venv/bin/python scripts/gen_docs.py          # rewrite the generated blocks in place
    .venv/bin/python scripts/gen_docs.py --check  # exit 1 if any block is stale (tests/unit/test_docs.py)

A generated block sits between `<!-- generated: NAME -->` and `<!-- end: NAME -->`; everything
outside the markers is written by hand.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ---- the control plane's API ----------------------------------------------------------------------


def _app() -> Any:
    import logging

    from control.app import create_app
    from control.settings import ControlSettings

    logging.getLogger("control.app").setLevel(logging.ERROR)  # "no GeoIP database" is expected here
    return create_app(ControlSettings(admin_token="docs-generator-token"), "postgresql://unused/docs")


def _scopes(dependant: Any) -> set[str] | None:
    """The scopes a route's `requires(...)` dependency accepts (admin always does); None: no auth."""
    for dep in dependant.dependencies:
        call = dep.call
        if getattr(call, "__qualname__", "") == "requires.<locals>.dependency" and call.__closure__:
            for cell in call.__closure__:
                if isinstance(cell.cell_contents, tuple):
                    return {"admin", *(s.value for s in cell.cell_contents)}
        found = _scopes(dep)
        if found is not None:
            return found
    return None


def _schema_name(ref_or_schema: dict[str, Any]) -> str | None:
    if "$ref" in ref_or_schema:
        return str(ref_or_schema["$ref"]).rsplit("/", 1)[-1]
    for option in ref_or_schema.get("anyOf", []):
        name = _schema_name(option)
        if name:
            return name
    return None


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " \\| ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"[{_type(schema.get('items', {}))}]"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"{{str: {_type(schema['additionalProperties'])}}}"
    return str(kind)


def _constraints(schema: dict[str, Any]) -> str:
    names = {
        "minimum": "≥",
        "maximum": "≤",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
        "minLength": "min length",
        "maxLength": "max length",
        "minItems": "min items",
        "maxItems": "max items",
        "pattern": "pattern",
    }

    def show(value: object) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    parts = [f"{label} `{show(schema[key])}`" for key, label in names.items() if key in schema]
    for option in schema.get("anyOf", []):
        nested = _constraints(option)
        if nested:
            parts.append(nested)
    return ", ".join(parts)


def _routes(routes: list[Any]) -> Iterator[Any]:
    """Every API route, through included routers (FastAPI wraps those in the app's route list)."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from _routes(route.original_router.routes)
        elif hasattr(route, "dependant"):
            yield route


def endpoints_block() -> str:
    app = _app()
    spec = app.openapi()
    scopes_by_route = {
        (method, route.path): _scopes(route.dependant)
        for route in _routes(app.routes)
        for method in getattr(route, "methods", ())
    }
    lines = ["| method, path | scopes | body | query, headers | what it does |", "|---|---|---|---|---|"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            scopes = scopes_by_route.get((method.upper(), path))
            scope_text = "none" if scopes is None else ", ".join(sorted(scopes))
            body = (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema")
            body_name = _schema_name(body) if body else None
            body_text = "—" if body_name is None else f"[`{body_name}`](#{body_name.lower()})"
            if body and not (op.get("requestBody") or {}).get("required"):
                body_text += " (optional)"
            params = [
                f"`{p['name']}`" + ("" if p["in"] == "query" else " (header)")
                for p in op.get("parameters", [])
                if p["in"] in ("query", "header") and p["name"] != "authorization"
            ]
            doc = (op.get("description") or op.get("summary") or "").strip().split("\n\n")[0]
            query = ", ".join(params) or "—"
            lines.append(f"| `{method.upper()} {path}` | {scope_text} | {body_text} | {query} | {_cell(doc)} |")
    return "\n".join(lines) + "\n"


def _body_schemas(spec: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for ops in spec["paths"].values():
        for op in ops.values():
            body = (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema")
            name = _schema_name(body) if body else None
            if name and name not in names:
                names.append(name)
    return names


def bodies_block() -> str:
    spec = _app().openapi()
    schemas = spec["components"]["schemas"]
    out: list[str] = []
    pending = _body_schemas(spec)
    seen: set[str] = set()
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        schema = schemas[name]
        required = set(schema.get("required", []))
        out += [f"#### {name}", "", "| field | type | required | constraints |", "|---|---|---|---|"]
        for field, fs in schema.get("properties", {}).items():
            needed = "yes" if field in required else ""
            out.append(f"| `{field}` | {_type(fs)} | {needed} | {_cell(_constraints(fs))} |")
            for ref in re.findall(r"#/components/schemas/([\w-]+)", str(fs)):
                if ref not in seen:
                    pending.append(ref)
        extra = "unknown fields are refused" if schema.get("additionalProperties") is False else ""
        out += ["", extra, ""] if extra else [""]
    return "\n".join(out).rstrip() + "\n"


def errors_block() -> str:
    from sync import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.MeridianError)]
    by_code = {c.code: c for c in classes if c is not errors.MeridianError}
    lines = ["| code | HTTP status | exception (`sync.errors`, Python client) |", "|---|---|---|"]
    for code in errors.ErrorCode:
        cls = by_code.get(code)
        lines.append(f"| `{code.value}` | {cls.status if cls else '—'} | `{cls.__name__ if cls else '—'}` |")
    return "\n".join(lines) + "\n"


# ---- settings and timing -------------------------------------------------------------------------


def _nested(env: Callable[[str], str], group: str) -> Callable[[str], str]:
    return lambda sub: env(f"{group}__{sub}")


def _settings_rows(model: Any, env: Callable[[str], str]) -> Iterator[str]:
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _settings_rows(annotation, _nested(env, name))
            continue
        value = None if field.is_required() else field.get_default(call_default_factory=True)
        default = "required" if field.is_required() else f"`{value if isinstance(value, Path) else repr(value)}`"
        yield f"| `{env(name)}` | {default} | {_cell(field.description or '')} |"


def settings_block() -> str:
    from control.settings import ControlSettings
    from edge.settings import EdgeSettings

    head = ["| environment variable | default | what it sets |", "|---|---|---|"]
    control = list(_settings_rows(ControlSettings, lambda n: "MERIDIAN_" + n.upper()))
    edge = list(_settings_rows(EdgeSettings, lambda n: "MERIDIAN_EDGE_" + n.upper()))
    return "\n".join(["**Control plane** (`meridian control serve`)", "", *head, *control, "",
                      "**Edge** (`meridian edge serve`)", "", *head, *edge]) + "\n"  # fmt: skip


def timing_block() -> str:
    from sync import timing

    tree = ast.parse((REPO / "sync" / "timing.py").read_text())
    lines = ["| constant | seconds | meaning |", "|---|---|---|"]
    body = tree.body
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            value = getattr(timing, node.target.id)
            doc = ""
            after = body[i + 1] if i + 1 < len(body) else None
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                doc = " ".join(str(after.value.value).split())
            lines.append(f"| `{node.target.id}` | {value:g} | {_cell(doc)} |")
    return "\n".join(lines) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "endpoints": endpoints_block,
    "bodies": bodies_block,
    "errors": errors_block,
    "settings": settings_block,
    "timing": timing_block,
}


def render(text: str) -> str:
    """`text` with every generated block rewritten."""
    cache: dict[str, str] = {}

    def block(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in cache:
            cache[name] = GENERATORS[name]()
        return f"{match.group(1)}{cache[name]}{match.group(4)}"

    return BLOCK.sub(block, text)


def doc_files() -> list[Path]:
    return sorted((REPO / "docs").glob("*.md"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args()
    stale = []
    for path in doc_files():
        text = path.read_text()
        fresh = render(text)
        if fresh != text:
            stale.append(path)
            if not args.check:
                path.write_text(fresh)
    for path in stale:
        print(f"{'stale' if args.check else 'rewrote'}: {path.relative_to(REPO)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())

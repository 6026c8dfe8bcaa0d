"""chatgw-client.d.ts and docs/asyncapi.yaml describe the same frames: every schema is an interface
of the same name with the same fields, the same optionality and the same types, and the frame unions
list exactly the frames the document lists."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DTS = ROOT / "gateway" / "static" / "chatgw-client" / "chatgw-client.d.ts"
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"

_INTERFACE_RE = re.compile(
    r"^export interface (\w+)(?: extends [\w, ]+)? \{\n(.*?)^\}", re.MULTILINE | re.DOTALL
)
_FIELD_RE = re.compile(r"^\s+(\w+)(\??): (.+);$")
_ALIAS_RE = re.compile(r"^export type (\w+) = (.+);$", re.MULTILINE)


@cache
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    return loaded


def schemas() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = doc()["components"]["schemas"]
    return found


@cache
def interfaces() -> dict[str, dict[str, tuple[bool, frozenset[str]]]]:
    """name -> field -> (optional, the members of its type union)."""
    found = {}
    for name, body in _INTERFACE_RE.findall(DTS.read_text(encoding="utf-8")):
        fields = {}
        for line in body.splitlines():
            match = _FIELD_RE.match(line)
            if match:
                field, optional, ts_type = match.groups()
                fields[field] = (optional == "?", union(ts_type))
        found[name] = fields
    return found


@cache
def aliases() -> dict[str, frozenset[str]]:
    return {name: union(value) for name, value in _ALIAS_RE.findall(DTS.read_text(encoding="utf-8"))}


def union(ts_type: str) -> frozenset[str]:
    return frozenset(part.strip() for part in ts_type.split("|"))


def expand(name: str) -> frozenset[str]:
    """An alias of a union of interfaces, with aliases inside it expanded."""
    members: set[str] = set()
    for member in aliases()[name]:
        members |= expand(member) if member in aliases() else {member}
    return frozenset(members)


def ts_of(schema: dict[str, Any]) -> frozenset[str]:
    """The TypeScript union a JSON Schema property must be declared with."""
    if "$ref" in schema:
        return frozenset({schema["$ref"].rsplit("/", 1)[1]})
    if "anyOf" in schema:
        return frozenset().union(*(ts_of(option) for option in schema["anyOf"]))
    if "const" in schema:
        return frozenset({f'"{schema["const"]}"'})
    if "enum" in schema:
        return frozenset(f'"{value}"' for value in schema["enum"])
    kind = str(schema.get("type"))
    if kind == "array":
        (item,) = ts_of(schema["items"])
        return frozenset({f"{item}[]"})
    simple = {
        "string": "string",
        "integer": "number",
        "number": "number",
        "boolean": "boolean",
        "null": "null",
    }
    return frozenset({simple[kind]})


def frame_schemas(action: str) -> set[str]:
    names = set()
    for operation in doc()["operations"].values():
        if operation["action"] != action:
            continue
        for ref in operation["messages"]:
            message_id = ref["$ref"].rsplit("/", 1)[1]
            payload = doc()["components"]["messages"][message_id]["payload"]["$ref"]
            names.add(payload.rsplit("/", 1)[1])
    return names


@pytest.mark.parametrize("name", sorted(schemas()))
def test_every_schema_is_an_interface_with_the_same_fields(name: str) -> None:
    assert name in interfaces(), f"chatgw-client.d.ts has no interface {name}"
    schema = schemas()[name]
    declared = interfaces()[name]
    assert set(declared) == set(schema["properties"]), f"{name}: fields differ"
    required = set(schema.get("required", []))
    for field, prop in schema["properties"].items():
        optional, ts_type = declared[field]
        # `type` always travels, though a server model gives it a default (so it is not "required").
        expected_optional = field not in required and field != "type"
        assert optional == expected_optional, f"{name}.{field}: optional should be {expected_optional}"
        assert ts_type == ts_of(prop), f"{name}.{field}: {sorted(ts_type)} != {sorted(ts_of(prop))}"


def test_frame_unions_list_exactly_the_documented_frames() -> None:
    assert expand("ClientFrame") == frame_schemas("receive")  # the gateway receives client frames
    assert expand("ServerFrame") == frame_schemas("send")


def test_every_frame_interface_is_documented() -> None:
    frames = expand("ClientFrame") | expand("ServerFrame")
    nested = {"Source", "Usage", "ErrorInfo"}
    documented = set(schemas())
    assert frames | nested <= documented
    undocumented = {name for name in interfaces() if name in frames and name not in documented}
    assert not undocumented

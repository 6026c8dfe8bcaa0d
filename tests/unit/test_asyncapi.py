"""docs/asyncapi.yaml (and the code tables in docs/protocol.md) stay in step with shared.protocol."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest
import yaml
from pydantic import BaseModel
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from shared import protocol as p
from shared.errors import CloseCode, ErrorCode

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_URI = "urn:chatgw:asyncapi"

CLIENT_MODELS: dict[str, type[BaseModel]] = dict(p.CLIENT_FRAME_TYPES)
SERVER_MODELS: dict[str, type[BaseModel]] = {
    model.model_fields["type"].default: model for model in get_args(get_args(p.ServerFrame)[0])
}
ALL_MODELS = {**CLIENT_MODELS, **SERVER_MODELS}


@cache
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow local $refs ("#/a/b") inside the AsyncAPI document."""
    seen = 0
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = doc()
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
        seen += 1
        assert seen < 10, "reference loop"
    return node


def operation_messages(action: str) -> list[dict[str, Any]]:
    ops = [op for op in doc()["operations"].values() if op["action"] == action]
    assert len(ops) == 1, f"expected one {action!r} operation"
    return [resolve(ref) for ref in ops[0]["messages"]]


def payload_schema(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ref = message["payload"]["$ref"]
    assert ref.startswith("#/components/schemas/")
    return ref.rsplit("/", 1)[1], resolve(message["payload"])


def doc_frame_types(action: str) -> dict[str, str]:
    """Frame type → schema name for the messages of the gateway's send/receive operation."""
    out = {}
    for message in operation_messages(action):
        name, schema = payload_schema(message)
        kind = schema["properties"]["type"]["const"]
        assert kind not in out, f"two messages for {kind!r}"
        assert message["name"] == kind, "message name should be the frame type"
        out[kind] = name
    return out


_IGNORED = {"title", "description", "examples"}


def normalise(schema: Any, defs: dict[str, Any]) -> Any:
    """Inline $refs (to $defs or components.schemas) and drop prose keys, for comparison."""
    if isinstance(schema, list):
        return [normalise(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return normalise(defs[name], defs)
    out = {}
    for key, value in schema.items():
        if key in _IGNORED and not isinstance(value, dict):
            continue  # a *property* named "title" (Source.title) is a dict and is kept
        if key == "$defs":
            continue
        out[key] = normalise(value, defs)
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return normalise(schema, schema.get("$defs", {}))


def doc_schema(name: str) -> dict[str, Any]:
    schemas = doc()["components"]["schemas"]
    return normalise(schemas[name], schemas)


def validator_for(name: str) -> jsonschema.protocols.Validator:
    resource = Resource.from_contents(copy.deepcopy(doc()), default_specification=DRAFT202012)
    registry: Registry = Registry().with_resource(DOC_URI, resource)
    schema = {"$ref": f"{DOC_URI}#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry, format_checker=None)


# ---------------------------------------------------------------- the document's shape


def test_asyncapi_version() -> None:
    assert doc()["asyncapi"] == "3.0.0"


def test_ws_channel() -> None:
    channels = doc()["channels"]
    assert [c["address"] for c in channels.values()] == ["/ws"]
    for server in doc()["servers"].values():
        assert server["protocol"] == "ws"


def test_every_local_ref_resolves() -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                resolve(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc())


def test_operations_use_the_channel_and_its_messages() -> None:
    channel_messages = doc()["channels"]["ws"]["messages"]
    listed = []
    for op in doc()["operations"].values():
        assert op["channel"] == {"$ref": "#/channels/ws"}
        for ref in op["messages"]:
            assert ref["$ref"].startswith("#/channels/ws/messages/")
            listed.append(ref["$ref"].rsplit("/", 1)[1])
    assert sorted(listed) == sorted(channel_messages), "each channel message belongs to exactly one operation"


# ---------------------------------------------------------------- frame types


def test_client_frame_types_match_protocol() -> None:
    # The document describes the gateway: it receives client frames.
    assert set(doc_frame_types("receive")) == set(p.CLIENT_FRAME_TYPES)


def test_server_frame_types_match_protocol() -> None:
    assert set(doc_frame_types("send")) == set(SERVER_MODELS)
    assert len(SERVER_MODELS) == len(get_args(get_args(p.ServerFrame)[0]))


def test_every_message_uses_the_schema_named_after_its_model() -> None:
    for action in ("receive", "send"):
        for kind, schema_name in doc_frame_types(action).items():
            assert schema_name == ALL_MODELS[kind].__name__


# ---------------------------------------------------------------- schemas equal the models'


@pytest.mark.parametrize("kind", sorted(ALL_MODELS))
def test_doc_schema_has_the_models_properties_and_required(kind: str) -> None:
    model = ALL_MODELS[kind]
    expected = model.model_json_schema()
    got = doc()["components"]["schemas"][model.__name__]
    assert set(got["properties"]) == set(expected["properties"]), "property names differ"
    assert sorted(got.get("required", [])) == sorted(expected.get("required", [])), "required lists differ"


@pytest.mark.parametrize("kind", sorted(ALL_MODELS))
def test_doc_schema_equals_the_model_schema(kind: str) -> None:
    # Stronger than names: types, constraints, defaults and nested schemas (Source, Usage, ErrorInfo).
    model = ALL_MODELS[kind]
    assert doc_schema(model.__name__) == model_schema(model)


@pytest.mark.parametrize("name", ["Source", "Usage", "ErrorInfo"])
def test_nested_schemas_equal_their_models(name: str) -> None:
    model = getattr(p, name)
    assert doc_schema(name) == model_schema(model)


def test_client_schemas_refuse_unknown_fields() -> None:
    for model in CLIENT_MODELS.values():
        assert doc()["components"]["schemas"][model.__name__]["additionalProperties"] is False


def test_no_unused_schemas() -> None:
    names = set(doc()["components"]["schemas"])
    assert names == {m.__name__ for m in ALL_MODELS.values()} | {"Source", "Usage", "ErrorInfo"}


# ---------------------------------------------------------------- frames validate against the doc


RUN = "9b2e41d07c6a4e5f8d13a0b7c4e29f61"
CONV = "4f1c2a9be0d34c7e9a51b8f3d2c6e710"
BASE: dict[str, Any] = {"run_id": RUN, "conversation_id": CONV, "seq": 1, "ts": 1732530000.5}

SERIALISED: list[BaseModel] = [
    p.RunAccepted(id="c-1", run_id=RUN, conversation_id=CONV),
    p.RunState(run_id=RUN, status="stopping"),
    p.Pong(id="p-1"),
    p.Pong(),
    p.ErrorFrame(run_id=RUN, code=ErrorCode.RUN_NOT_FOUND, message="run not found"),
    p.RunStarted(**BASE, attempt=2),
    p.RunRetrying(**BASE, attempt=2, reason="worker_shutdown"),
    p.Retrieval(**BASE, sources=[p.Source(id="d", title="T", snippet="S")]),
    p.TokenEvent(**BASE, text="hi"),
    p.RunCompleted(**BASE, content="done", usage=p.Usage(prompt_tokens=3, completion_tokens=4)),
    p.RunStopped(**BASE, content=""),
    p.RunFailed(**BASE, error=p.ErrorInfo(code=ErrorCode.WORKER_LOST, message="gone")),
    p.ChatFrame(type="chat", content="What is chatgw?", conversation_id=CONV, id="c-1"),
    p.ChatFrame(type="chat", content="hi"),
    p.AuthFrame(type="auth", token="dev:alice"),
    p.StopFrame(type="stop", run_id=RUN),
    p.ResumeFrame(type="resume", run_id=RUN, after_seq=p.MAX_SEQ, id="r"),
    p.PingFrame(type="ping"),
]


@pytest.mark.parametrize("model", SERIALISED, ids=lambda m: type(m).__name__)
def test_serialised_frame_validates_against_its_doc_schema(model: BaseModel) -> None:
    wire = json.loads(p.serialize(model))
    validator_for(type(model).__name__).validate(wire)


def test_spliced_event_validates_against_its_doc_schema() -> None:
    raw = p.splice_seq(p.event_body("token", RUN, CONV, 12.5, text="x"), 3)
    validator_for("TokenEvent").validate(json.loads(raw))


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("ChatFrame", {"type": "chat", "content": "hi", "contnet": "typo"}),
        ("ChatFrame", {"type": "chat", "content": ""}),
        ("ChatFrame", {"type": "ping"}),
        ("ResumeFrame", {"type": "resume", "run_id": RUN, "after_seq": "5"}),
        ("ResumeFrame", {"type": "resume", "run_id": RUN, "after_seq": -1}),
        ("ResumeFrame", {"type": "resume", "run_id": RUN, "after_seq": 2**53}),
        ("StopFrame", {"type": "stop", "run_id": "a b"}),
        ("RunState", {"type": "run.state", "run_id": RUN, "status": "running"}),
        ("TokenEvent", {**BASE, "type": "token"}),
        ("RunRetrying", {**BASE, "type": "run.retrying"}),
        ("RunRetrying", {**BASE, "type": "run.retrying", "attempt": 2, "reason": "bored"}),
        ("RunFailed", {**BASE, "type": "run.failed", "error": {"code": "x"}}),
    ],
)
def test_doc_schemas_reject_what_the_models_reject(name: str, bad: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validator_for(name).validate(bad)
    model = getattr(p, name)
    with pytest.raises(ValueError):
        model.model_validate(bad, strict=True)


def doc_examples() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for message_id, message in doc()["components"]["messages"].items():
        for example in message["examples"]:
            out.append((message_id, example["payload"]))
    return out


@pytest.mark.parametrize(
    ("message_id", "payload"), doc_examples(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_doc_examples_are_valid_frames(message_id: str, payload: dict[str, Any]) -> None:
    message = doc()["components"]["messages"][message_id]
    name, _ = payload_schema(message)
    validator_for(name).validate(payload)
    text = json.dumps(payload)
    if payload["type"] in CLIENT_MODELS:
        parsed: BaseModel = p.parse_client_frame(text)
    else:
        parsed = p.parse_server_frame(text)
    assert type(parsed).__name__ == name


def test_every_message_has_an_example() -> None:
    for message_id, message in doc()["components"]["messages"].items():
        assert message.get("examples"), message_id


# ---------------------------------------------------------------- docs/protocol.md tables


@cache
def protocol_md() -> str:
    return (DOCS / "protocol.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_protocol_md_documents_every_error_code(code: ErrorCode) -> None:
    assert re.search(rf"^\| `{re.escape(code.value)}` \|", protocol_md(), re.MULTILINE), code


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda c: str(int(c)))
def test_protocol_md_documents_every_close_code(code: CloseCode) -> None:
    assert re.search(rf"^\| {int(code)} \|", protocol_md(), re.MULTILINE), code


@pytest.mark.parametrize("kind", sorted(ALL_MODELS))
def test_protocol_md_documents_every_frame_type(kind: str) -> None:
    assert f"`{kind}`" in protocol_md()


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_errors_md_or_tree_mentions_every_code(code: ErrorCode) -> None:
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    assert code.value in text or (code.value.startswith("llm_") and "llm_*" in text)


def test_errors_md_tree_matches_shared_errors() -> None:
    """Every ChatgwError subclass is in the tree, under its real parent, with its real code."""
    import shared.errors as errors

    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    start = text.index("```text")
    tree = text[start : text.index("```", start + 3)]
    classes = {
        name: obj
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.ChatgwError)
    }
    stack: list[tuple[int, str]] = [(-1, "Exception")]
    listed = set()
    for line in tree.splitlines():
        match = re.search(r"[└├]── (\w+)\s+code = (\S+)", line)
        if not match:
            continue
        name, code = match.groups()
        depth = match.start()
        while stack[-1][0] >= depth:
            stack.pop()
        cls = classes[name]
        assert cls.__bases__[0].__name__ == stack[-1][1], f"{name} is drawn under the wrong parent"
        if not code.startswith("("):
            assert code == cls.code.value, f"{name} carries {cls.code.value}, not {code}"
        stack.append((depth, name))
        listed.add(name)
    assert listed == set(classes)

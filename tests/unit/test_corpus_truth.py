"""The sample corpus (worker/corpus/) is what the assistant quotes: it must agree with the code.

Every CHATGW_* name it mentions is a setting, every default it states is that setting's default, its
Docker Compose facts are docker-compose.yml's, and its close and error codes are shared/errors.py's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from shared.errors import CloseCode, ErrorCode
from shared.settings import Settings, env_name, load_settings
from worker.agent.embeddings import stem
from worker.corpus import CORPUS_DIR

ROOT = Path(__file__).resolve().parents[2]
DOCS = {p.name: p.read_text() for p in sorted(CORPUS_DIR.glob("*.md"))}
TEXT = "\n".join(DOCS.values())
FLAT = re.sub(r"\s+", " ", TEXT)  # sentences wrap across lines
NAME_RE = re.compile(r"\bCHATGW_[A-Z][A-Z0-9_]*[A-Z0-9]\b")
# How the corpus states a default: "`CHATGW_X` (default 30 seconds)", "`CHATGW_X` (3)",
# "`CHATGW_X`, default 10 seconds", "`CHATGW_X` (`offline`)".
INLINE_DEFAULT_RE = re.compile(
    r"`(CHATGW_[A-Z0-9_]+)`(?:,| \((?:default )?| \(| is)?\s*(?:default )?`?([A-Za-z0-9_./:-]+)`?"
    r"(?: (days|hours))?[ ,)]"
)
UNIT_S = {"": 1, "days": 86400, "hours": 3600}
ROW_RE = re.compile(r"^\|\s*((?:`CHATGW_[A-Z0-9_]+`(?:,\s*)?)+)\s*\|\s*([^|]+?)\s*\|", re.MULTILINE)
# Defaults that are paths inside the data directory, as the corpus (and --help) states them.
DERIVED = {
    "CHATGW_INDEX_PATH": "CHATGW_DATA_DIR/index",
    "CHATGW_CHECKPOINT_PATH": "CHATGW_DATA_DIR/checkpoints.sqlite",
}


@pytest.fixture(scope="module")
def defaults() -> dict[str, object]:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("CHATGW_")}
    try:
        settings = load_settings(_env_file=None)
    finally:
        os.environ.update(saved)
    values: dict[str, object] = {env_name(f): getattr(settings, f) for f in Settings.model_fields}
    values.update(DERIVED)
    return values


def _same(stated: str, default: object) -> bool:
    stated = stated.strip("`.,;").strip()
    if default is None:
        return stated in ("unset", "none")
    if isinstance(default, bool):
        return stated.lower() == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(stated) == float(default)
        except ValueError:
            return False
    return stated == str(default)


def test_every_setting_the_corpus_names_exists() -> None:
    names = set(NAME_RE.findall(TEXT))
    known = {env_name(f) for f in Settings.model_fields}
    assert len(names) >= 40, "the corpus documents the settings"
    assert names <= known, f"not settings: {sorted(names - known)}"


def test_every_default_the_corpus_states_is_the_real_one(defaults: dict[str, object]) -> None:
    checked = 0
    wrong = []
    for name, stated, unit in INLINE_DEFAULT_RE.findall(FLAT):
        if not (
            stated[0].isdigit()
            or stated in ("unset", "true", "false")
            or stated.startswith("CHATGW_DATA_DIR")
        ):
            continue  # prose after the name, not a value: "(or `OPENAI_API_KEY`)", "is set"
        checked += 1
        if unit:
            stated = str(float(stated) * UNIT_S[unit])
        if not _same(stated, defaults[name]):
            wrong.append(f"{name}: corpus says {stated!r}, Settings says {defaults[name]!r}")
    for names, value in ROW_RE.findall(TEXT):
        row_names = re.findall(r"CHATGW_[A-Z0-9_]+", names)
        values = [v.strip() for v in value.split(",")] if len(row_names) > 1 else [value]
        for name, stated in zip(row_names, values, strict=False):
            first = stated.strip("`").split()[0].strip("`,") if stated.strip("`") else ""
            if name == "CHATGW_DATA_DIR" or not first or first in ("(", "per"):
                continue  # a per-user path: see test_the_data_directory_is_described
            checked += 1
            if not _same(first, defaults[name]):
                wrong.append(f"{name}: table says {first!r}, Settings says {defaults[name]!r}")
    assert checked >= 40, f"only {checked} defaults found: did the corpus's phrasing change?"
    assert not wrong, "\n".join(wrong)


def test_the_data_directory_is_described() -> None:
    assert "~/.local/share/chatgw" in FLAT
    assert "CHATGW_DATA_DIR/index" in FLAT and "CHATGW_DATA_DIR/checkpoints.sqlite" in FLAT
    assert "data/index" not in FLAT.replace("CHATGW_DATA_DIR/index", "")


# ---------------------------------------------------------------- Docker Compose


@pytest.fixture(scope="module")
def compose() -> dict[str, dict[str, object]]:
    services: dict[str, dict[str, object]] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())[
        "services"
    ]
    return services


def _seconds(value: object) -> int:
    return int(str(value).removesuffix("s"))


def test_compose_facts_match_docker_compose_yml(compose: dict[str, dict[str, object]]) -> None:
    gateways = [name for name in compose if re.fullmatch(r"gateway-\d+", name)]
    worker = compose["worker"]
    replicas = worker["deploy"]["replicas"]  # type: ignore[index]
    nginx_port = str(compose["nginx"]["ports"][0]).split(":")[0]  # type: ignore[index]
    compose_doc = re.sub(r"\s+", " ", DOCS["deployment.md"])

    assert set(map(int, re.findall(r"(\d+) gateways", FLAT))) == {len(gateways)}
    assert set(map(int, re.findall(r"(\d+) workers\b", FLAT))) == {replicas}
    assert set(re.findall(r"published on port (\d+)", FLAT)) == {nginx_port}
    assert set(re.findall(r"ws://localhost:(\d+)/ws", FLAT)) == {nginx_port}
    assert set(map(int, re.findall(r"stop grace period of (\d+) seconds", FLAT))) == {
        _seconds(worker["stop_grace_period"])
    }
    assert "nginx" in compose_doc and "redis://redis:6379/0" in compose_doc
    env = compose["gateway-1"]["environment"]
    assert f"0.0.0.0:{env['CHATGW_PORT']}" in compose_doc  # type: ignore[index]
    assert f"`{compose['worker']['environment']['CHATGW_DATA_DIR']}`" in compose_doc  # type: ignore[index]


def test_compose_commands_in_the_corpus_name_real_services(compose: dict[str, dict[str, object]]) -> None:
    commands = re.findall(r"docker compose [^`\n]*", TEXT)
    assert len(commands) >= 3
    for command in commands:
        for service in re.findall(r"--scale (\w[\w-]*)=", command) + re.findall(
            r"run --rm (?:-v \S+ )?(\w[\w-]*)", command
        ):
            assert service in compose, command
    assert compose["ingest"]["command"] == ["chatgw", "ingest", "--sample"], (
        "the corpus says it ingests the sample"
    )


# ---------------------------------------------------------------- codes


def test_close_codes_and_their_meanings_match_shared_errors() -> None:
    stated = re.findall(r"\b(1\d{3}|4\d{3})\b(?:\s*\|\s*|\s*\()([a-z][a-z ]+)", FLAT)
    assert len(stated) >= 10
    for code, meaning in stated:
        member = CloseCode(int(code))  # ValueError: not a close code chatgw uses
        words = {stem(w) for w in member.name.lower().split("_")} - {"too"}
        assert words & {stem(w) for w in meaning.split()}, (
            f"{code} is {member.name}, the corpus says {meaning!r}"
        )
    for code in re.findall(r"(?:close|closed with|code) (\d{4})\b", FLAT):
        CloseCode(int(code))


def test_error_codes_in_the_corpus_exist() -> None:
    named = set(
        re.findall(
            r"(?:`error`|error code|code|gets the error|answers|with the error code) `([a-z][a-z_]+)`", FLAT
        )
    )
    named |= set(re.findall(r"`(llm_[a-z_]+|too_many_[a-z_]+|[a-z_]+_not_found|[a-z_]+_busy)`", FLAT))
    named -= {"llm_base_url"}
    assert len(named) >= 10, named
    unknown = named - {code.value for code in ErrorCode}
    assert not unknown, f"not error codes: {sorted(unknown)}"

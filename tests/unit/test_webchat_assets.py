"""The web chat's static assets: vendored libraries untouched and licensed, every module the page
imports present, no inline script or handler anywhere, and the Content-Security-Policy."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from gateway.webchat import STATIC_DIR, content_security_policy, render_page
from shared.settings import Settings

VENDOR = STATIC_DIR / "vendor"
_IMPORT_RE = re.compile(r"""^\s*import\s[^"']*["']([^"']+)["'];""", re.MULTILINE)


def versions() -> dict[str, dict[str, object]]:
    loaded: dict[str, dict[str, object]] = json.loads((VENDOR / "versions.json").read_text(encoding="utf-8"))
    return loaded


@pytest.mark.parametrize("package", ["marked", "dompurify"])
def test_vendored_files_are_as_published(package: str) -> None:
    """scripts/refresh-vendor.sh records each file's sha256; a hand edit shows here."""
    files = versions()[package]["files"]
    assert isinstance(files, dict)
    assert any(name.endswith(".LICENSE") for name in files), f"{package} ships without its license"
    for name, digest in files.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_every_vendored_file_is_recorded() -> None:
    recorded = {name for entry in versions().values() for name in entry["files"]}  # type: ignore[attr-defined]
    assert {p.name for p in VENDOR.iterdir()} - {"versions.json"} == recorded


def page_modules() -> list[Path]:
    return [*sorted((STATIC_DIR / "js").glob("*.js")), STATIC_DIR / "chatgw-client" / "chatgw-client.js"]


@pytest.mark.parametrize("module", page_modules(), ids=lambda p: p.name)
def test_module_imports_resolve(module: Path) -> None:
    for target in _IMPORT_RE.findall(module.read_text(encoding="utf-8")):
        assert target.startswith("."), f"{module.name}: bare import {target!r} cannot load in a browser"
        assert (module.parent / target).resolve().is_file(), f"{module.name}: {target} is missing"


def test_no_inline_script_or_handler_in_the_page() -> None:
    html = render_page(Settings(_env_file=None))  # type: ignore[call-arg]
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"\sstyle\s*=", html), "inline style"
    assert '<meta name="chatgw-auth" content="dev">' in html


def test_policy_forbids_inline_script_and_framing() -> None:
    policy = content_security_policy("127.0.0.1:8000")
    directives = dict(d.split(" ", 1) for d in policy.split("; "))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["connect-src"] == "'self' ws://127.0.0.1:8000 wss://127.0.0.1:8000"


@pytest.mark.parametrize("host", ["evil.com; script-src *", "a b", "x\r\ny", "", None])
def test_an_odd_host_header_never_reaches_the_policy(host: str | None) -> None:
    directives = dict(d.split(" ", 1) for d in content_security_policy(host).split("; "))
    assert directives["connect-src"] == "'self'"
    assert directives["script-src"] == "'self'"


def test_every_error_code_has_words_in_the_page() -> None:
    """gateway/static/js/words.js says each wire code in a sentence (or, for a request the page
    built wrongly, shows the gateway's message); a new code needs its words there."""
    from shared.errors import ErrorCode

    words = (STATIC_DIR / "js" / "words.js").read_text(encoding="utf-8")
    missing = [code.value for code in ErrorCode if not re.search(rf'\b{code.value}\b["\s:]', words)]
    missing = [code for code in missing if not code.startswith("llm_")]  # llm_* have a generic sentence
    assert not missing, f"no words for {missing} in gateway/static/js/words.js"

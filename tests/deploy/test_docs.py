"""The documentation runs as written: every fenced block marked ```sh runnable in README.md
and docs/*.md is run with bash in a fresh folder laid out like a clone (a block marked
```sh runnable serve gets a `cds-service serve` of its own, on a free port substituted for
8080), and every relative link in them points at a file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from servers import Service

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```sh runnable( serve)?\n(.*?)^```$", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def runnable_blocks() -> list[tuple[str, bool, str]]:
    """(where, needs a server, script) for every runnable block."""
    out = []
    for path in DOCS:
        text = path.read_text("utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            out.append((f"{path.relative_to(ROOT)}:{line}", bool(match.group(1)), match.group(2)))
    return out


BLOCKS = runnable_blocks()


def test_the_docs_have_runnable_blocks() -> None:
    """The README's tour and the docs mark their commands runnable (the extraction finds them)."""
    where = {w.split(":")[0] for w, _, _ in BLOCKS}
    assert {"README.md", "docs/rules.md", "docs/adding-a-rule.md"} <= where
    assert any(serve for _, serve, _ in BLOCKS)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like a fresh clone after the README's install: .venv (the
    environment running the tests), the data files the docs name, and a copy of docs/."""
    if not (Path(sys.prefix) / "bin" / "cds-service").exists():
        if os.environ.get("CI"):
            pytest.fail("the tests must run from the virtual environment .ci/run builds")
        pytest.skip("not running from a virtual environment with cds-service installed")
    folder = tmp_path_factory.mktemp("clone")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    for name in ("fixtures", "examples"):
        (folder / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "docs", folder / "docs")
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    return folder


@pytest.mark.parametrize(("where", "serve", "script"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_runnable_block_exits_0(
    clone: Path, tmp_path: Path, where: str, serve: bool, script: str
) -> None:
    """The block's commands all succeed as written, in a fresh data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_DATA_DIR=str(tmp_path / "data"), XDG_DATA_HOME=str(tmp_path / "xdg"))
    service = None
    if serve:
        service = Service({"CDS_DATA_DIR": env["CDS_DATA_DIR"], "CDS_TODAY": ""}).start()
        script = script.replace("127.0.0.1:8080", f"127.0.0.1:{service.port}")
    try:
        result = subprocess.run(
            [shutil.which("bash") or "/bin/bash", "-euo", "pipefail", "-c", script],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        if service is not None:
            service.stop()
    assert result.returncode == 0, (
        f"{where}\n{script}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    )


def test_relative_links_point_at_files() -> None:
    """Every relative link (and image) in README.md and docs/*.md names a file that exists."""
    broken = []
    for path in DOCS:
        for target in LINK.findall(path.read_text("utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (path.parent / target.split("#")[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert broken == []


def test_readme_is_a_front_page() -> None:
    """README.md stays short (under about 200 lines); the rest lives in docs/."""
    assert len((ROOT / "README.md").read_text("utf-8").splitlines()) <= 200


def test_architecture_picture_matches_the_import_contracts() -> None:
    """docs/architecture.md draws exactly the layers of the import-linter contract, in order."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    text = (ROOT / "docs" / "architecture.md").read_text("utf-8")
    picture = text.split("## Layers", 1)[1].split("```", 2)[1]
    drawn = []
    for line in picture.splitlines():
        names = re.match(r"\s*([a-z_]+(?:\s*\|\s*[a-z_]+)*)(?:\s{2,}|$)", line)
        if names and names.group(1).strip():
            drawn.append(" | ".join(n.strip() for n in names.group(1).split("|")))
    assert drawn == [
        " | ".join(n.strip() for n in layer.split("|")) for layer in contract["layers"]
    ]


def test_configuration_lists_every_environment_variable() -> None:
    """docs/configuration.md has one table row per variable config.py reads (ENV_NAMES), and
    names no variable the code does not read."""
    from cds_service.config import ENV_NAMES

    text = (ROOT / "docs" / "configuration.md").read_text("utf-8")
    rows = set(re.findall(r"^\| `([A-Z_]+)` \|", text, re.MULTILINE))
    assert rows == set(ENV_NAMES.values())


def test_readme_links_every_docs_page() -> None:
    """README.md's "Where to look next" names every page in docs/, so none is orphaned."""
    text = (ROOT / "README.md").read_text("utf-8").split("## Where to look next", 1)[1]
    linked = {t.split("#")[0] for t in LINK.findall(text)}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set()

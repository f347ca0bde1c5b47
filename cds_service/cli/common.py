"""What every subcommand shares: a command-line failure (exit 2), reading a JSON file, the
configuration from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cds_service.config import Config, ConfigError, from_env


class _Fail(Exception):
    """A command-line problem: its message is printed and the command exits with 2."""


def _read_json(path: str) -> Any:
    from cds_service.errors import CdsError
    from cds_service.hooks.request import read_json_bytes

    try:
        return read_json_bytes(Path(path).read_bytes())
    except OSError as exc:
        raise _Fail(f"cannot read {path}: {exc}") from None
    except CdsError as exc:
        raise _Fail(f"cannot read {path}: {exc.message}") from None


def _config() -> Config:
    try:
        return from_env()
    except ConfigError as exc:
        raise _Fail(str(exc)) from None

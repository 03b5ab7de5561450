"""Reading a JSON object from a user-edited file (configs, model cards) with errors a user can act on."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["read_json_object"]


def read_json_object(path: str | os.PathLike, what: str = "config file") -> dict[str, Any]:
    """The JSON object in ``path``; a missing file, invalid JSON/UTF-8 or a non-object top level raise
    ConfigError naming the file (a traceback from json would not say which file or what to fix)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {p} is a directory, not a JSON file") from None
    except OSError as e:  # permission, a path through a file
        raise ConfigError(f"cannot read {what} {p}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: the top level must be a JSON object")
    return d

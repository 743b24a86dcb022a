"""Files the repo reads back (config.json, summary.json, the launch and claim records), read as
data: a file cut short, one that is not JSON, or one that holds another shape than expected is
one line naming the file (FileDamaged, a ValueError), never a decoder's traceback."""

from __future__ import annotations

import json
from pathlib import Path


class FileDamaged(ValueError):
    """A file the repo wrote, found damaged or hand-edited: the message names it."""


def read_json(path: str | Path, kind: type = dict):
    """The JSON value of `path`, which must be a `kind` (an object, by default)."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        cut = e.pos >= len(e.doc.rstrip()) or e.msg.startswith("Unterminated string")
        raise FileDamaged(
            f"{path} is {'cut short' if cut else 'not JSON'} (line {e.lineno}, column "
            f"{e.colno}: {e.msg})"
        ) from None
    except UnicodeDecodeError:
        raise FileDamaged(f"{path} is not text") from None
    if not isinstance(value, kind):
        raise FileDamaged(
            f"{path} holds {type(value).__name__} {str(value)[:40]!r}, not a JSON "
            f"{'object' if kind is dict else kind.__name__}"
        )
    return value

"""Read rows from local files or the hub, with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from undo.errors import UserError

Row = tuple[str, dict[str, Any]]  # (location "file:line", row)


def read_rows(path: Path) -> list[Row]:
    """JSONL, JSON (a list, or BIG-bench's {"examples": [...]}), CSV or Parquet."""
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    try:
        return _read_rows(path)
    except UnicodeDecodeError as e:  # JSONL names its line itself; the others the byte
        raise UserError(f"{path}: not UTF-8 text ({e.reason}); save it as UTF-8") from None


def _read_rows(path: Path) -> list[Row]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return list(_jsonl(path))
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            # a .json file holding JSON Lines is common enough to accept
            try:
                return list(_jsonl(path))
            except UserError:
                raise UserError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
        if isinstance(data, dict):
            for key in ("examples", "data", "rows"):
                if isinstance(data.get(key), list):
                    data = data[key]
                    break
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a list of records (or an 'examples' list)")
        return [(f"{path}:item {i + 1}", _as_dict(r, path, i + 1)) for i, r in enumerate(data)]
    if suffix in (".csv", ".tsv", ".parquet"):
        import pandas as pd

        if suffix == ".parquet":
            frame = pd.read_parquet(path)
            first_line = 1
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str,
                                keep_default_na=False, encoding="utf-8")
            first_line = 2  # the header is line 1
        return [
            (f"{path}:{i + first_line}", {k: _plain(v) for k, v in row.items()})
            for i, row in enumerate(frame.to_dict(orient="records"))
        ]
    raise UserError(f"{path}: unsupported data file type '{suffix}' (use .jsonl, .json, .csv, .parquet)")


def _plain(v: Any) -> Any:
    return v.tolist() if hasattr(v, "tolist") else v


def _as_dict(row: Any, path: Path, line: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise UserError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
    return row


def _jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{n}: not UTF-8 text ({e.reason}); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not valid JSON: {e.msg}") from None
            yield f"{path}:{n}", _as_dict(row, path, n)


def hub_rows(hub_id: str, split: str, config: str | None = None) -> list[Row]:
    """A hub dataset split; users have the hub, this machine does not."""
    try:
        from datasets import load_dataset

        ds = load_dataset(hub_id, config, split=split)
    except Exception as e:  # network, auth, missing split: one line for the user
        raise UserError(
            f"cannot load '{hub_id}' split '{split}' from the Hugging Face hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); offline, point task.source at local files"
        ) from None
    return [(f"{hub_id}[{split}] row {i}", dict(r)) for i, r in enumerate(ds)]


def field(row: dict[str, Any], name: str, where: str) -> Any:
    """row[name], supporting dotted paths ('question.stem'); a missing one names the line."""
    node: Any = row
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"{where}: missing field '{name}'")
        node = node[part]
    if node is None:
        raise UserError(f"{where}: field '{name}' is empty")
    return node

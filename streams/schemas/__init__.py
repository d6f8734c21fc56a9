"""Exported JSON Schemas of every contract (generated from ``streams.contracts``)."""

from __future__ import annotations

from pathlib import Path

import orjson

from streams.contracts import ALL_CONTRACTS, json_schema, schema_filename

SCHEMA_DIR = Path(__file__).parent


def render(contract_schema: dict) -> bytes:
    return orjson.dumps(contract_schema, option=orjson.OPT_INDENT_2) + b"\n"


def write_schemas(directory: Path | None = None) -> list[Path]:
    directory = directory or SCHEMA_DIR
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for contract in ALL_CONTRACTS:
        path = directory / schema_filename(contract)
        path.write_bytes(render(json_schema(contract)))
        written.append(path)
    return written


def check_schemas(directory: Path | None = None) -> list[str]:
    """Names of schema files that are missing or differ from the code."""
    directory = directory or SCHEMA_DIR
    stale = []
    for contract in ALL_CONTRACTS:
        path = directory / schema_filename(contract)
        if not path.exists() or path.read_bytes() != render(json_schema(contract)):
            stale.append(path.name)
    return stale

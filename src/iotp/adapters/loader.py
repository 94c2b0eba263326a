"""Mappings from YAML or JSON: the shipped ones (``builtin/``) and an operator's files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from iotp.adapters.spec import Mapping

BUILTIN = ("tasmota", "zigbee2mqtt", "shelly")
SUFFIXES = (".yaml", ".yml", ".json")


class MappingFileError(ValueError):
    """A mapping file that cannot be read or does not validate; says where and why."""


def parse(text: str, *, source: str = "mapping") -> Mapping:
    """A mapping from YAML (JSON is YAML too) text."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingFileError(f"{source}: not YAML/JSON: {exc}") from None
    return validate(data, source=source)


def validate(data: Any, *, source: str = "mapping") -> Mapping:
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "mapping"
        raise MappingFileError(f"{source}: {where}: {first['msg']}") from None


def load_file(path: Path) -> Mapping:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            return validate(orjson.loads(text), source=str(path))
        except orjson.JSONDecodeError as exc:
            raise MappingFileError(f"{path}: not JSON: {exc}") from None
    return parse(text, source=str(path))


def load_dir(directory: Path) -> list[Mapping]:
    """Every ``*.yaml``, ``*.yml`` and ``*.json`` file, in name order."""
    return [
        load_file(path)
        for path in sorted(directory.iterdir())
        if path.is_file() and path.suffix in SUFFIXES
    ]


def builtin(name: str) -> Mapping:
    text = resources.files("iotp.adapters").joinpath("builtin", f"{name}.yaml").read_text("utf-8")
    return parse(text, source=f"builtin {name}")

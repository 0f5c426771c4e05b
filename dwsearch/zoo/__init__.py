"""Built-in model specs, shipped as YAML data inside the package, and :func:`load_spec`, which
finds a spec wherever a user names it (a dict, a file, a built-in name)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from dwsearch.errors import SpecError
from dwsearch.spec import ModelSpec

__all__ = ["MAX_SPEC_BYTES", "get_spec", "list_specs", "load_spec"]

# A spec is a few hundred bytes; this bounds what is read into memory for a wrong path.
MAX_SPEC_BYTES = 4 * 2**20


def list_specs() -> list[str]:
    """Names of the built-in specs (``seed_cnn``, ``seed_dwsep``, ...)."""
    files = resources.files(__package__)
    return sorted(p.name[: -len(".yaml")] for p in files.iterdir() if p.name.endswith(".yaml"))


def get_spec(name: str) -> ModelSpec:
    """The built-in spec called ``name``; unknown names list the close matches."""
    names = list_specs()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise SpecError(
            f"{name!r} is neither a spec file nor a built-in spec; {hint}"
            f"built-in: {', '.join(names)}"
        )
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text()
    return ModelSpec.from_yaml(text, source=f"dwsearch/zoo/{name}.yaml")


def load_spec(source: str | Path | Mapping[str, Any] | ModelSpec) -> ModelSpec:
    """A spec from a ModelSpec, a dict, a YAML or JSON file path or a built-in name."""
    if isinstance(source, ModelSpec):
        return source
    if isinstance(source, Mapping):
        return ModelSpec.from_dict(source)
    if not isinstance(source, (str, Path)):
        raise SpecError(f"spec: expected a file path, a built-in name, a mapping or a ModelSpec, "
                        f"found {type(source).__name__}")
    if str(source).strip() == "":
        raise SpecError("spec: empty name; give a spec file or a built-in name "
                        f"({', '.join(list_specs())})")
    path = Path(source)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.exists():
            raise SpecError(f"{path}: no such spec file")
        if not path.is_file():
            raise SpecError(f"{path}: not a regular file")
        try:
            size = path.stat().st_size
            if size > MAX_SPEC_BYTES:
                raise SpecError(f"{path}: {size:,} bytes; a spec file is at most "
                                f"{MAX_SPEC_BYTES:,} bytes")
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"{path}: cannot read the spec file ({err})") from err
        return ModelSpec.from_yaml(text, source=str(path))
    return get_spec(str(source))

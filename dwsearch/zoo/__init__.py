"""Built-in model specs, shipped as YAML data inside the package."""

from __future__ import annotations

import difflib
from importlib import resources

from dwsearch.spec import ModelSpec, SpecError

__all__ = ["get_spec", "list_specs"]


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

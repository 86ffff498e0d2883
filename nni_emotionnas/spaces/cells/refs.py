"""Cell references in configs and architecture dicts: a catalog name (`lstm`) or a NAS-Bench-NLP recipe
file, optionally with the recipe's name (`recipes.json#cell_42`)."""

from __future__ import annotations

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.spaces.cells.catalog import CATALOG, catalog_cell
from nni_emotionnas.spaces.cells.nasbench import load_recipes
from nni_emotionnas.spaces.cells.spec import CellSpec


def resolve_cell(ref: str, where: str = "cells") -> CellSpec:
    if ref in CATALOG:
        return catalog_cell(ref, where)
    path, _, name = ref.partition("#")
    if not path.endswith((".json", ".py", ".txt")):
        raise ConfigError(f"{where}: {ref!r} is neither a catalog cell ({', '.join(CATALOG)}) nor a recipe file")
    recipes = load_recipes(path)
    if not name:
        if len(recipes) != 1:
            raise ConfigError(f"{where}: {path} holds {len(recipes)} recipes; name one as {path}#NAME")
        return next(iter(recipes.values()))
    if name not in recipes:
        raise ConfigError(f"{where}: no recipe {name!r} in {path} (has: {', '.join(list(recipes)[:5])}...)")
    return recipes[name]


def expand_refs(refs: list[str], where: str = "cells") -> list[str]:
    """Turns a recipe file holding several recipes into one reference per recipe."""
    out: list[str] = []
    for ref in refs:
        if ref in CATALOG or "#" in ref:
            out.append(ref)
            continue
        recipes = load_recipes(ref) if ref.endswith((".json", ".py", ".txt")) else None
        if recipes is None:
            raise ConfigError(f"{where}: {ref!r} is neither a catalog cell ({', '.join(CATALOG)}) nor a recipe file")
        out += [ref] if len(recipes) == 1 else [f"{ref}#{name}" for name in recipes]
    return out

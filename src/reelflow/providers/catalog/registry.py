"""The process-wide default `Catalog`, and the module-level functions over it.

The engine, worker, plan validation and API take a `Catalog`; without one they use the default, built on
first use from the built-ins, provider plugins and the catalog file (`REELFLOW_CATALOG_FILE`), see
`default_catalog`. No module dict changes at run time: a reload builds a new catalog object.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from reelflow.errors import ErrorItem

from .catalog import Catalog, ParamSchema
from .file import CatalogFileError, UserModel
from .spec import ModelSpec

if TYPE_CHECKING:
    from reelflow.config import Settings

_STATIC = Catalog()
"""The built-ins alone: what needs no plugin or catalog file (parameter schemas, plugins' own entries)."""
_DEFAULT: Catalog | None = None
_ERROR: CatalogFileError | None = None
_BUILDING = False
_LOCK = threading.RLock()


def default_catalog() -> Catalog:
    """The process's catalog, built on first call (`load_extensions`); a bad catalog file raises
    CatalogFileError, then again on every call until fixed and reloaded."""
    found = _DEFAULT
    if found is not None:
        return found
    return load_extensions()


def set_default_catalog(catalog: Catalog | None) -> Catalog | None:
    """Make `catalog` the process's default (None: build it again on next use); returns the previous one."""
    global _DEFAULT, _ERROR
    with _LOCK:
        previous, _DEFAULT, _ERROR = _DEFAULT, catalog, None
        return previous


def load_extensions(settings: Settings | None = None, *, reload: bool = False) -> Catalog:
    """Build the default catalog: built-ins, provider plugins' models, then the catalog file; once per process.

    Called on first use of the catalog; call it at startup to fail early on a bad file. Raises
    CatalogFileError (then again on every use of the catalog, until fixed and reloaded).
    """
    global _DEFAULT, _ERROR, _BUILDING
    with _LOCK:
        if reload:
            reset_extensions()
        if _DEFAULT is not None:
            return _DEFAULT
        if _ERROR is not None:
            raise _ERROR
        if _BUILDING:  # asked again while plugins describe themselves: the built-ins answer
            return _STATIC
        _BUILDING = True
        try:
            catalog = Catalog.build(settings)
        except CatalogFileError as exc:
            _ERROR = exc
            raise
        finally:
            _BUILDING = False
        _DEFAULT = catalog
        return catalog


def reset_extensions() -> None:
    """Forget the default catalog and the plugins found (the next use builds both again)."""
    from reelflow.providers.plugins import reset_plugins

    set_default_catalog(None)
    reset_plugins()


def register_model(spec: ModelSpec, *, replace: bool = False) -> None:
    """Add a model to the default catalog; refuses to replace one unless asked."""
    default_catalog().register(spec, replace=replace)


def get_model(model_id: str) -> ModelSpec | None:
    """The catalogued model with this id, or None (`Catalog.get` of the default catalog)."""
    return default_catalog().get(model_id)


def list_models() -> list[ModelSpec]:
    """Every catalogued model, built-in first."""
    return default_catalog().models()


def known_providers() -> set[str]:
    """Providers of catalogued models, the remote providers that run any model, and provider plugins."""
    return default_catalog().providers()


def models_for_type(job_type: str) -> list[ModelSpec]:
    """Catalogued models that serve `job_type`."""
    return default_catalog().models(type=job_type)


def param_schema(job_type: str, model: ModelSpec | None) -> ParamSchema | None:
    """The parameter schema of a job of this type on this model; None when it cannot be known."""
    return _STATIC.param_schema(job_type, model)


def check_job_params(
    job_type: str,
    model_id: str | None,
    params: Mapping[str, Any],
    *,
    job_key: str,
    loc_prefix: Sequence[str | int] = ("params",),
    allow_refs: bool = False,
) -> list[ErrorItem]:
    """Check a job's params against its type and model (the worker's check of resolved values)."""
    return default_catalog().check_job_params(
        job_type, model_id, params, job_key=job_key, loc_prefix=loc_prefix, allow_refs=allow_refs
    )


def parse_model_entries(
    entries: Sequence[Any],
    *,
    source: str,
    providers: set[str],
    root: yaml.Node | None = None,
    prefix: Sequence[str | int] = (),
) -> list[UserModel]:
    """Validate model entries (the catalog-file format); raise CatalogFileError naming every problem.

    `providers` are the ones models may belong to; an id already in the catalog needs `replace: true`.
    Checked against the built-in models (plugins parse theirs while the default catalog is being built).
    """
    return _STATIC.parse_entries(entries, source=source, providers=providers, root=root, prefix=prefix)


def parse_catalog_text(text: str, source: str, providers: set[str] | None = None) -> list[UserModel]:
    """Validate a catalog file's text; raise CatalogFileError with file, line, model and field of each problem."""
    return default_catalog().parse_text(text, source, providers)


def load_catalog_file(path: str | os.PathLike[str]) -> list[ModelSpec]:
    """Read, validate and install a catalog file's models in the default catalog; all or nothing."""
    return default_catalog().load_file(path)


def input_names(model_id: str) -> dict[str, str]:
    """A user model's {our parameter name: provider input name} (for plugin adapters; empty if none)."""
    return default_catalog().input_names(model_id)


def install_model(um: UserModel, *, origin: str) -> None:
    """Put a user model in the default catalog; `unregister_model` removes it."""
    default_catalog().install(um, origin=origin)


def unregister_model(model_id: str) -> bool:
    """Remove a model a catalog file or a plugin added (restoring any built-in it replaced)."""
    return default_catalog().uninstall(model_id)

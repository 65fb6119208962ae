"""The catalog in use: the built-in models, then every provider's, plus what plugins and the catalog file add.

A new model is one more `ModelSpec` in a provider's data module (or a `register_model` call). Users add
models without editing reelflow through a catalog file (`REELFLOW_CATALOG_FILE`) or a provider plugin;
both are loaded on the first use of the catalog (`load_extensions`) and installed here, in the catalog
and in the maps the built-in adapters read (each installation is undone by `unregister_model`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from reelflow.errors import ErrorItem

from . import elevenlabs, fal, google, openai, replicate
from . import file as catalog_file
from .builtin import BUILTIN_MODELS, OPEN_PROVIDERS, OPERATION_RULES, OPERATIONS, RUN_INPUT
from .file import CatalogFileError, CatalogProblem, UserModel
from .retired import retired_message
from .spec import ModelSpec, ParamRule, ParamSpec
from .validation import check_params

if TYPE_CHECKING:
    from reelflow.config import Settings

REMOTE_CATALOGS = (replicate, fal, elevenlabs, openai, google)
"""The built-in remote providers' data modules, in catalog order (after the built-in models)."""

_MODELS: dict[str, ModelSpec] = {m.id: m for m in BUILTIN_MODELS}
for _module in REMOTE_CATALOGS:
    _MODELS.update((m.id, m) for m in _module.MODELS)


def register_model(spec: ModelSpec, *, replace: bool = False) -> None:
    """Add a model to the catalog (a user catalog); refuses to replace one unless asked."""
    if spec.id in _MODELS and not replace:
        raise ValueError(f"model {spec.id} is already in the catalog")
    _MODELS[spec.id] = spec


_VERSION_SUFFIX = re.compile(r"^[A-Za-z0-9]{1,128}$")


def get_model(model_id: str) -> ModelSpec | None:
    """The catalogued model with this id, or None. A pinned version (`replicate/owner/name:<version>`) is the
    catalogued model it pins."""
    _ensure_extensions()
    found = _MODELS.get(model_id)
    if found is None and ":" in model_id and _VERSION_SUFFIX.match(model_id.rpartition(":")[2]):
        found = _MODELS.get(model_id.rpartition(":")[0])
    return found


def list_models() -> list[ModelSpec]:
    """Every catalogued model, built-in first."""
    _ensure_extensions()
    return list(_MODELS.values())


def known_providers() -> set[str]:
    """Providers of catalogued models, the remote providers that run any model, and provider plugins."""
    _ensure_extensions()
    return {m.provider for m in _MODELS.values()} | set(OPEN_PROVIDERS) | _EXT.plugin_providers


def models_for_type(job_type: str) -> list[ModelSpec]:
    """Catalogued models that serve `job_type`."""
    _ensure_extensions()
    return [m for m in _MODELS.values() if job_type in m.types]


@dataclass(frozen=True)
class ParamSchema:
    """What `check_params` needs to check one job's params."""

    specs: dict[str, ParamSpec]
    rules: tuple[ParamRule, ...]
    extra_allowed: bool
    owner: str
    """Named in "unknown parameter ... for <owner>" messages."""


def param_schema(job_type: str, model: ModelSpec | None) -> ParamSchema | None:
    """The parameter schema of a job of this type on this model; None when it cannot be known."""
    if job_type == "run":
        return ParamSchema({"input": RUN_INPUT}, (), True, "run")
    if job_type in OPERATIONS:
        return ParamSchema(OPERATIONS[job_type], tuple(OPERATION_RULES.get(job_type, ())), False, job_type)
    if model is None or job_type not in model.types:
        return None
    return ParamSchema(model.params, tuple(model.rules), model.extra_params, f"model {model.id}")


def check_job_params(
    job_type: str,
    model_id: str | None,
    params: Mapping[str, Any],
    *,
    job_id: str,
    loc_prefix: Sequence[str | int] = ("params",),
    allow_refs: bool = False,
) -> list[ErrorItem]:
    """Check a job's params against its type and model (the worker's check of resolved values)."""
    retired = retired_message(model_id)
    if retired is not None:
        return [ErrorItem(["model"], f"job '{job_id}': {retired}")]
    model = get_model(model_id) if model_id else None
    schema = param_schema(job_type, model)
    if schema is None:
        return [ErrorItem(["model"], f"job '{job_id}': no catalogued model {model_id} serves {job_type}")]
    return check_params(
        schema.specs,
        params,
        extra_allowed=schema.extra_allowed,
        loc_prefix=list(loc_prefix),
        job_id=job_id,
        allow_refs=allow_refs,
        rules=schema.rules,
        owner=schema.owner,
    )


def _catalogued(model_id: str) -> str | None:
    """Where a catalogued model came from (None when it is not catalogued)."""
    if model_id not in _MODELS:
        return None
    return _EXT.installed[model_id][0] if model_id in _EXT.installed else "built in"


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
    """
    return catalog_file.parse_model_entries(
        entries, source=source, providers=providers, catalogued=_catalogued, root=root, prefix=prefix
    )


def parse_catalog_text(text: str, source: str, providers: set[str] | None = None) -> list[UserModel]:
    """Validate a catalog file's text; raise CatalogFileError with file, line, model and field of each problem."""
    if providers is None:
        providers = set(OPEN_PROVIDERS) | _EXT.plugin_providers
    return catalog_file.parse_catalog_text(text, source, providers=providers, catalogued=_catalogued)


def load_catalog_file(path: str | os.PathLike[str]) -> list[ModelSpec]:
    """Read, validate and install a catalog file's models; all or nothing (CatalogFileError names each problem)."""
    _ensure_extensions()  # plugins first: their providers may have models here
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogFileError(source, [CatalogProblem(source, None, None, "", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogFileError(source, [CatalogProblem(source, None, None, "", f"cannot be read: {exc}")]) from None
    models = parse_catalog_text(text, source)
    for um in models:
        install_model(um, origin=f"from {source}")
    return [um.spec for um in models]


# --- installing user models (the catalog and the adapters' maps) ----------------------------------

_MISSING: Any = object()
_INPUT_NAMES: dict[str, dict[str, str]] = {}


def input_names(model_id: str) -> dict[str, str]:
    """A user model's {our parameter name: provider input name} (for plugin adapters; empty if none)."""
    return dict(_INPUT_NAMES.get(model_id, {}))


def _fal_converter(name: str) -> Callable[[Any], Any]:
    return fal.CONVERTERS[name]


def _adapter_entries(um: UserModel) -> list[tuple[dict[str, Any], str, Any]]:
    """(map, key, value) entries the built-in adapters read for this model."""
    spec = um.spec
    if spec.provider == "replicate":
        key = replicate.base_model_id(spec.id)
        entries: list[tuple[dict[str, Any], str, Any]] = [(replicate.MODELS_BY_ID, key, spec)]
        if um.inputs:
            entries.append((replicate.INPUT_MAPS, key, dict(um.inputs)))
        return entries
    if spec.provider == "fal":
        names = {**{n: n for n in um.converts}, **um.inputs}
        if not names:
            return []
        mapping = {
            n: fal.FalInput(target, _fal_converter(um.converts[n]) if n in um.converts else None)
            for n, target in names.items()
        }
        return [(fal.INPUT_MAP, spec.id, mapping)]
    if spec.provider == "elevenlabs":
        return [(elevenlabs.MODELS_BY_ID, spec.id, spec)]
    return []


def install_model(um: UserModel, *, origin: str) -> None:
    """Put a user model in the catalog and in its adapter's maps; `unregister_model` undoes it all."""
    if um.spec.id in _EXT.installed:
        unregister_model(um.spec.id)
    undo: list[tuple[dict[str, Any], str, Any]] = []
    entries: list[tuple[dict[str, Any], str, Any]] = [(_MODELS, um.spec.id, um.spec)]
    if um.inputs:
        entries.append((_INPUT_NAMES, um.spec.id, dict(um.inputs)))
    for mapping, key, value in [*entries, *_adapter_entries(um)]:
        undo.append((mapping, key, mapping.get(key, _MISSING)))
        mapping[key] = value
    _EXT.installed[um.spec.id] = (origin, undo)


def unregister_model(model_id: str) -> bool:
    """Remove a model a catalog file or a plugin added (restoring any built-in it replaced)."""
    found = _EXT.installed.pop(model_id, None)
    if found is None:
        return False
    for mapping, key, old in reversed(found[1]):
        if old is _MISSING:
            mapping.pop(key, None)
        else:
            mapping[key] = old
    return True


# --- loading once ----------------------------------------------------------------------------------


@dataclass
class _Extensions:
    state: Literal["new", "loading", "ready", "failed"] = "new"
    error: CatalogFileError | None = None
    plugin_providers: set[str] = field(default_factory=set)
    installed: dict[str, tuple[str, list[tuple[dict[str, Any], str, Any]]]] = field(default_factory=dict)
    """Model id -> (where it came from, how to undo its installation)."""


_EXT = _Extensions()
_EXT_LOCK = threading.RLock()


def _ensure_extensions() -> None:
    if _EXT.state not in ("ready", "loading"):
        load_extensions()


def load_extensions(settings: Settings | None = None, *, reload: bool = False) -> None:
    """Install provider plugins' models, then the catalog file (`REELFLOW_CATALOG_FILE`); once per process.

    Called on first use of the catalog; call it at startup to fail early on a bad file. Raises
    CatalogFileError (then again on every use of the catalog, until fixed and reloaded).
    """
    with _EXT_LOCK:
        if reload:
            reset_extensions()
        if _EXT.state in ("ready", "loading"):
            return
        if _EXT.state == "failed" and _EXT.error is not None:
            raise _EXT.error
        _EXT.state = "loading"
        try:
            from reelflow.providers.plugins import load_plugins

            for plugin in load_plugins().values():
                _EXT.plugin_providers.add(plugin.name)
                for um in plugin.models:
                    install_model(um, origin=f"provider plugin '{plugin.name}'")
            if settings is None:
                from reelflow.config import get_settings

                settings = get_settings()
            if settings.catalog_file:
                load_catalog_file(settings.catalog_file)
        except CatalogFileError as exc:
            _EXT.state, _EXT.error = "failed", exc
            raise
        except BaseException:
            _EXT.state = "new"
            raise
        _EXT.state = "ready"


def reset_extensions() -> None:
    """Forget every plugin and catalog-file model (tests; `load_extensions(reload=True)`)."""
    from reelflow.providers.plugins import reset_plugins

    with _EXT_LOCK:
        for model_id in list(_EXT.installed):
            unregister_model(model_id)
        _EXT.plugin_providers.clear()
        _EXT.state, _EXT.error = "new", None
        reset_plugins()

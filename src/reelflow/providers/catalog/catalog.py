"""`Catalog`: the models and operations one engine, worker and API use, built once and handed to them.

A catalog starts from the built-in models and every built-in provider's (their data modules are never
changed); plugins' models and the catalog file are installed on top, in the catalog object only. The
adapters ask it for what a user model changes in their maps (`replicate_spec`, `fal_inputs`, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from reelflow.errors import ErrorItem

from . import elevenlabs, fal, google, openai, replicate
from . import file as catalog_file
from .builtin import BUILTIN_MODELS, OPEN_PROVIDERS, OPERATION_RULES, OPERATION_SPECS, OPERATIONS, RUN_INPUT
from .file import CatalogFileError, CatalogProblem, UserModel
from .retired import retired_message
from .spec import ModelSpec, OperationSpec, ParamRule, ParamSpec
from .validation import check_params

if TYPE_CHECKING:
    from reelflow.config import Settings

REMOTE_CATALOGS = (replicate, fal, elevenlabs, openai, google)
"""The built-in remote providers' data modules, in catalog order (after the built-in models)."""

_VERSION_SUFFIX = re.compile(r"^[A-Za-z0-9]{1,128}$")


def builtin_models() -> dict[str, ModelSpec]:
    """The built-in models, then each built-in remote provider's, by id."""
    models = {m.id: m for m in BUILTIN_MODELS}
    for module in REMOTE_CATALOGS:
        models.update((m.id, m) for m in module.MODELS)
    return models


@dataclass(frozen=True)
class ParamSchema:
    """What `check_params` needs to check one job's params."""

    specs: dict[str, ParamSpec]
    rules: tuple[ParamRule, ...]
    extra_allowed: bool
    owner: str
    """Named in "unknown parameter ... for <owner>" messages."""


def _fal_converter(name: str) -> Callable[[Any], Any]:
    return fal.CONVERTERS[name]


class Catalog:
    """Models by id (built-in, then installed user models) and the local operations."""

    def __init__(self, models: Iterable[ModelSpec] | None = None, *, plugin_providers: Iterable[str] = ()) -> None:
        self._builtin: dict[str, ModelSpec] = (
            builtin_models() if models is None else {m.id: m for m in models}
        )
        self._models: dict[str, ModelSpec] = dict(self._builtin)
        self._user: dict[str, tuple[str, UserModel]] = {}
        """Installed user models: id -> (where it came from, the model)."""
        self.plugin_providers: set[str] = set(plugin_providers)
        self._schemas: dict[tuple[str, int], tuple[ModelSpec | None, ParamSchema | None]] = {}
        """`param_schema` answers by (job type, id of the model), each with the model it was made for: the
        worker asks once per job, and a model replaced under the same id (a new object) is not the one cached."""

    @classmethod
    def build(cls, settings: Settings | None = None, *, plugins: bool = True) -> Catalog:
        """The built-ins, then provider plugins' models, then the catalog file (`REELFLOW_CATALOG_FILE`).

        Raises CatalogFileError naming each problem of a bad catalog file.
        """
        catalog = cls()
        if plugins:
            from reelflow.providers.plugins import load_plugins

            for plugin in load_plugins().values():
                catalog.plugin_providers.add(plugin.name)
                for um in plugin.models:
                    catalog.install(um, origin=f"provider plugin '{plugin.name}'")
        if settings is None:
            from reelflow.config import get_settings

            settings = get_settings()
        if settings.catalog_file:
            catalog.load_file(settings.catalog_file)
        return catalog

    def copy(self) -> Catalog:
        """An independent catalog with the same models (tests register models in it)."""
        other = Catalog(self._builtin.values(), plugin_providers=self.plugin_providers)
        other._models = dict(self._models)
        other._user = dict(self._user)
        return other

    # --- reading ------------------------------------------------------------------------------------

    def get(self, model_id: str) -> ModelSpec | None:
        """The catalogued model with this id, or None. A pinned version (`replicate/owner/name:<version>`) is
        the catalogued model it pins."""
        found = self._models.get(model_id)
        if found is None and ":" in model_id and _VERSION_SUFFIX.match(model_id.rpartition(":")[2]):
            found = self._models.get(model_id.rpartition(":")[0])
        return found

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models

    def models(self, type: str | None = None, provider: str | None = None) -> list[ModelSpec]:
        """Catalogued models (built-in first), of this job type and provider when given."""
        return [
            m
            for m in self._models.values()
            if (type is None or type in m.types) and (provider is None or m.provider == provider)
        ]

    def operations(self) -> list[OperationSpec]:
        """The local operations (type, description, parameters), in documentation order."""
        return list(OPERATION_SPECS)

    def providers(self) -> set[str]:
        """Providers of catalogued models, the remote providers that run any model, and provider plugins."""
        return {m.provider for m in self._models.values()} | set(OPEN_PROVIDERS) | self.plugin_providers

    def origin(self, model_id: str) -> str | None:
        """Where a catalogued model came from (None when it is not catalogued)."""
        if model_id not in self._models:
            return None
        return self._user[model_id][0] if model_id in self._user else "built in"

    def param_schema(self, job_type: str, model: ModelSpec | None) -> ParamSchema | None:
        """The parameter schema of a job of this type on this model; None when it cannot be known."""
        key = (job_type, id(model))
        hit = self._schemas.get(key)
        if hit is not None and hit[0] is model:
            return hit[1]
        schema = self._param_schema(job_type, model)
        self._schemas[key] = (model, schema)
        return schema

    def _param_schema(self, job_type: str, model: ModelSpec | None) -> ParamSchema | None:
        if job_type == "run":
            return ParamSchema({"input": RUN_INPUT}, (), True, "run")
        if job_type in OPERATIONS:
            return ParamSchema(OPERATIONS[job_type], tuple(OPERATION_RULES.get(job_type, ())), False, job_type)
        if model is None or job_type not in model.types:
            return None
        return ParamSchema(model.params, tuple(model.rules), model.extra_params, f"model {model.id}")

    def check_job_params(
        self,
        job_type: str,
        model_id: str | None,
        params: Mapping[str, Any],
        *,
        job_key: str,
        loc_prefix: Sequence[str | int] = ("params",),
        allow_refs: bool = False,
    ) -> list[ErrorItem]:
        """Check a job's params against its type and model (the worker's check of resolved values)."""
        retired = retired_message(model_id)
        if retired is not None:
            return [ErrorItem(["model"], f"job '{job_key}': {retired}")]
        model = self.get(model_id) if model_id else None
        schema = self.param_schema(job_type, model)
        if schema is None:
            return [ErrorItem(["model"], f"job '{job_key}': no catalogued model {model_id} serves {job_type}")]
        return check_params(
            schema.specs,
            params,
            extra_allowed=schema.extra_allowed,
            loc_prefix=list(loc_prefix),
            job_key=job_key,
            allow_refs=allow_refs,
            rules=schema.rules,
            owner=schema.owner,
        )

    # --- what the built-in adapters read ------------------------------------------------------------

    def _installed(self, model_id: str, provider: str) -> UserModel | None:
        found = self._user.get(model_id)
        return found[1] if found is not None and found[1].spec.provider == provider else None

    def input_names(self, model_id: str) -> dict[str, str]:
        """A user model's {our parameter name: provider input name} (for plugin adapters; empty if none)."""
        found = self._user.get(model_id)
        return dict(found[1].inputs) if found is not None else {}

    def _provider_spec(self, model_id: str, provider: str) -> ModelSpec | None:
        """This catalog's model with this id when `provider` runs it (an installed user model, a registered or
        a built-in one), else None."""
        found = self._models.get(model_id)
        return found if found is not None and found.provider == provider else None

    def replicate_spec(self, model_id: str) -> ModelSpec | None:
        """The Replicate model behind this id (`:version` ignored), as this catalog holds it."""
        return self._provider_spec(replicate.base_model_id(model_id), "replicate")

    def replicate_inputs(self, model_id: str) -> dict[str, str]:
        """{our parameter name: Replicate input name} of a Replicate model (empty when all pass through)."""
        key = replicate.base_model_id(model_id)
        um = self._installed(key, "replicate")
        if um is not None and um.inputs:
            return dict(um.inputs)
        return replicate.INPUT_MAPS.get(key, {})

    def fal_inputs(self, model_id: str | None) -> dict[str, fal.FalInput]:
        """Where each of our parameter names goes in a fal model's input (and how it is converted)."""
        um = self._installed(model_id or "", "fal")
        if um is not None:
            names = {**{n: n for n in um.converts}, **um.inputs}
            if names:
                return {
                    n: fal.FalInput(target, _fal_converter(um.converts[n]) if n in um.converts else None)
                    for n, target in names.items()
                }
        return fal.INPUT_MAP.get(model_id or "", {})

    def elevenlabs_spec(self, model_id: str) -> ModelSpec | None:
        """An ElevenLabs model, as this catalog holds it."""
        return self._provider_spec(model_id, "elevenlabs")

    def openai_spec(self, model_id: str) -> ModelSpec | None:
        """An OpenAI model, as this catalog holds it."""
        return self._provider_spec(model_id, "openai")

    def google_spec(self, model_id: str) -> ModelSpec | None:
        """A Google (Veo) model, as this catalog holds it."""
        return self._provider_spec(model_id, "google")

    # --- changing this catalog (while it is being built, or in tests) -------------------------------

    def register(self, spec: ModelSpec, *, replace: bool = False) -> None:
        """Add a model (refuses to replace one unless asked)."""
        if spec.id in self._models and not replace:
            raise ValueError(f"model {spec.id} is already in the catalog")
        self._models[spec.id] = spec

    def install(self, um: UserModel, *, origin: str) -> None:
        """Put a user model in this catalog (replacing a built-in one or an earlier installation)."""
        self._user[um.spec.id] = (origin, um)
        self._models[um.spec.id] = um.spec

    def uninstall(self, model_id: str) -> bool:
        """Remove a user model (restoring any built-in it replaced)."""
        if self._user.pop(model_id, None) is None:
            return False
        if model_id in self._builtin:
            self._models[model_id] = self._builtin[model_id]
        else:
            self._models.pop(model_id, None)
        return True

    def parse_entries(
        self,
        entries: Sequence[Any],
        *,
        source: str,
        providers: set[str],
        root: yaml.Node | None = None,
        prefix: Sequence[str | int] = (),
    ) -> list[UserModel]:
        """Validate model entries (the catalog-file format) against this catalog; raise CatalogFileError."""
        return catalog_file.parse_model_entries(
            entries, source=source, providers=providers, catalogued=self.origin, root=root, prefix=prefix
        )

    def parse_text(self, text: str, source: str, providers: set[str] | None = None) -> list[UserModel]:
        """Validate a catalog file's text; raise CatalogFileError with file, line, model and field of each problem."""
        if providers is None:
            providers = set(OPEN_PROVIDERS) | self.plugin_providers
        return catalog_file.parse_catalog_text(text, source, providers=providers, catalogued=self.origin)

    def load_file(self, path: str | os.PathLike[str]) -> list[ModelSpec]:
        """Read, validate and install a catalog file's models; all or nothing (CatalogFileError names each problem)."""
        source = os.fspath(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CatalogFileError(source, [CatalogProblem(source, None, None, "", "no such file")]) from None
        except (OSError, UnicodeDecodeError) as exc:
            problem = CatalogProblem(source, None, None, "", f"cannot be read: {exc}")
            raise CatalogFileError(source, [problem]) from None
        models = self.parse_text(text, source)
        for um in models:
            self.install(um, origin=f"from {source}")
        return [um.spec for um in models]

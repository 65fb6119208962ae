"""Provider plugins: providers from other distributions, found through the `reelflow.providers` entry points.

A distribution declares in its entry points (pyproject.toml)::

    [project.entry-points."reelflow.providers"]
    acme = "acme_reelflow:AcmeProvider"

The entry point's name is the provider's name: the `<provider>` of its model ids (`acme/<model>`), and
it must equal the provider object's `name`. The object it names is a Provider class or factory,
called with no arguments (or a ready provider object), giving an object with `name` and async
`submit`, `wait`, `cancel` (see base.Provider). Optional, on that object:

- `key_env`: the environment variable holding its credential; plans using it are refused while unset;
- `models()`: its models, as ModelSpec objects or as mappings in the catalog-file format (see
  examples/catalog.yaml); a model's provider must be the plugin's own.

A provider may describe itself in one `info` attribute, a `ProviderInfo` (name, key variable, default limits,
...), as the built-in adapters do; `key_env` is read when it has none.

A plugin that fails to import, to build, or to describe itself is logged with its name and skipped;
one named like a built-in provider, or like a plugin found before it, is refused with a log line.
Discovery runs once per process (`load_plugins`); `reset_plugins` forgets it.

The built-in providers register through the same path (`load_builtins`), from the table of their entry points.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

from .base import Provider
from .catalog import ModelSpec, UserModel, parse_model_entries
from .info import BUILTIN_INFO, ProviderInfo

log = logging.getLogger(__name__)

GROUP = "reelflow.providers"
BUILTIN_ENTRY_POINTS: dict[str, str] = {
    "local": "reelflow.providers.local:LocalProvider",
    "sim": "reelflow.providers.sim:SimProvider",
    "replicate": "reelflow.providers.replicate:ReplicateProvider",
    "fal": "reelflow.providers.fal:FalProvider",
    "elevenlabs": "reelflow.providers.elevenlabs:ElevenLabsProvider",
    "openai": "reelflow.providers.openai:OpenAIProvider",
    "google": "reelflow.providers.google:GoogleProvider",
}
"""The built-in providers, as the entry points a plugin distribution would declare (loaded by `load_builtins`)."""
BUILTIN_PROVIDERS: frozenset[str] = frozenset(BUILTIN_ENTRY_POINTS)
"""Names a plugin may not take."""

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class PluginError(Exception):
    """A plugin that cannot be used; the message says why."""


@dataclass(frozen=True)
class Plugin:
    """A provider plugin that loaded and described itself."""

    name: str
    origin: str
    """`<entry point value> from <distribution> <version>`, for log lines."""
    factory: Callable[[], Any]
    info: ProviderInfo
    models: tuple[UserModel, ...]

    @property
    def key_env(self) -> str | None:
        """The environment variable holding its credential, if it declared one."""
        return self.info.key_env

    def make(self) -> Provider:
        """A new provider object from the plugin's factory (checked)."""
        provider = self.factory()
        check_provider(self.name, provider)
        return cast(Provider, provider)


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" from {dist.name} {dist.version}" if dist is not None else ""
    return f"{ep.value}{where}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def check_provider(name: str, provider: Any) -> None:
    """Raise PluginError unless `provider` has this `name` and async submit, wait and cancel."""
    got = getattr(provider, "name", None)
    if got != name:
        raise PluginError(f"its provider's name is {got!r}, not {name!r} (the entry point's name)")
    for method in ("submit", "wait", "cancel"):
        fn = getattr(provider, method, None)
        if fn is None or not callable(fn):
            raise PluginError(f"its provider has no {method}() method")
        if not inspect.iscoroutinefunction(fn):
            raise PluginError(f"its provider's {method}() must be async")


def _factory(obj: Any) -> Callable[[], Any]:
    """A class or factory is called for each provider wanted; a ready provider object is reused."""
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "submit")):
        return cast(Callable[[], Any], obj)
    return lambda: obj


def _key_env(provider: Any) -> str | None:
    value = getattr(provider, "key_env", None)
    if value is None:
        return None
    if not isinstance(value, str) or not _ENV_RE.match(value):
        raise PluginError(f"key_env must be an environment variable name (got {value!r})")
    return value


def _info(name: str, provider: Any, obj: Any) -> ProviderInfo:
    """The provider's `info`, or one made of its name and `key_env` when it has none."""
    info = getattr(provider, "info", None)
    if isinstance(info, ProviderInfo):
        if info.name != name:
            raise PluginError(f"its info names provider {info.name!r}, not {name!r} (the entry point's name)")
        _key_env(info)
        return info
    return ProviderInfo(name=name, key_env=_key_env(provider) or _key_env(obj))


def _models(name: str, provider: Any) -> tuple[UserModel, ...]:
    fn = getattr(provider, "models", None)
    if fn is None:
        return ()
    if not callable(fn):
        raise PluginError("models must be a method returning a list of models")
    listed = fn()
    if not isinstance(listed, list | tuple):
        raise PluginError(f"models() must return a list (got {type(listed).__name__})")
    ready: list[UserModel] = []
    entries: list[Mapping[str, Any]] = []
    for i, item in enumerate(listed):
        if isinstance(item, ModelSpec):
            if item.provider != name:
                raise PluginError(f"models()[{i}] {item.id} belongs to provider '{item.provider}', not '{name}'")
            ready.append(UserModel(item, {}, {}, False))
        elif isinstance(item, Mapping):
            entries.append(item)
        else:
            raise PluginError(f"models()[{i}] is a {type(item).__name__}, not a ModelSpec or a mapping")
    if entries:
        ready += parse_model_entries(entries, source=f"provider plugin '{name}'", providers={name})
    ids = [m.spec.id for m in ready]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise PluginError(f"models() lists {', '.join(dupes)} more than once")
    return tuple(ready)


def _load(ep: EntryPoint) -> Plugin:
    obj = ep.load()
    factory = _factory(obj)
    provider = factory()
    check_provider(ep.name, provider)
    return Plugin(
        name=ep.name,
        origin=_origin(ep),
        factory=factory,
        info=_info(ep.name, provider, obj),
        models=_models(ep.name, provider),
    )


def discover() -> dict[str, Plugin]:
    """Every usable plugin of the `reelflow.providers` group, by provider name (logs the ones refused)."""
    found: dict[str, Plugin] = {}
    for ep in entry_points(group=GROUP):
        label = f"provider plugin '{ep.name}' ({_origin(ep)})"
        if not _NAME_RE.match(ep.name):
            log.error("%s refused: a provider name is lower-case letters, digits, - and _", label)
            continue
        if ep.name in BUILTIN_PROVIDERS:
            log.error("%s refused: '%s' is a built-in provider and a plugin cannot replace it", label, ep.name)
            continue
        if ep.name in found:
            log.error("%s refused: provider '%s' comes from %s already", label, ep.name, found[ep.name].origin)
            continue
        try:
            plugin = _load(ep)
        except Exception as exc:
            log.error("%s skipped: %s", label, _describe(exc), exc_info=log.isEnabledFor(logging.DEBUG))
            continue
        found[ep.name] = plugin
        log.info("%s loaded with %d models", label, len(plugin.models))
    return found


_PLUGINS: dict[str, Plugin] | None = None
_LOCK = threading.Lock()


def load_plugins() -> dict[str, Plugin]:
    """The usable plugins, discovered on first call."""
    global _PLUGINS
    with _LOCK:
        if _PLUGINS is None:
            _PLUGINS = discover()
        return dict(_PLUGINS)


def reset_plugins() -> None:
    """Forget what was discovered (the next `load_plugins` looks again)."""
    global _PLUGINS
    with _LOCK:
        _PLUGINS = None


_BUILTINS: dict[str, Plugin] | None = None


def load_builtins() -> dict[str, Plugin]:
    """The built-in providers, loaded through the same checks as plugins (on first call; an error raises)."""
    global _BUILTINS
    with _LOCK:
        if _BUILTINS is None:
            _BUILTINS = {
                name: _load(EntryPoint(name=name, value=value, group=GROUP))
                for name, value in BUILTIN_ENTRY_POINTS.items()
            }
        return dict(_BUILTINS)


def provider_infos() -> dict[str, ProviderInfo]:
    """What each provider says about itself, by name: the built-in ones, then the plugins."""
    return {name: p.info for name, p in {**load_builtins(), **load_plugins()}.items()}


def make_providers() -> dict[str, Provider]:
    """A new provider object of each plugin; one whose factory fails now is logged and left out."""
    out: dict[str, Provider] = {}
    for plugin in load_plugins().values():
        try:
            out[plugin.name] = plugin.make()
        except Exception as exc:
            log.error("provider plugin '%s' (%s) skipped: %s", plugin.name, plugin.origin, _describe(exc))
    return out


def provider_info(provider: str | None) -> ProviderInfo | None:
    """What a built-in or plugin provider says about itself (None for an unknown name). A built-in one's is
    read without loading its adapter (`BUILTIN_INFO`)."""
    if not provider:
        return None
    if (builtin := BUILTIN_INFO.get(provider)) is not None:
        return builtin
    plugin = load_plugins().get(provider)
    return plugin.info if plugin is not None else None

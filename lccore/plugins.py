"""Plugin discovery and the component registries.

An :class:`Engine` owns one pluggy plugin manager. There is no global one: a program that embeds
lccore can build several engines with different plugin sets side by side. The rest of lccore asks
the engine for components by kind and name and never calls pluggy directly.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import os
import sys
from typing import Any, Callable, Iterable

import attrs
import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError, close_matches, defined_at

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "lccore"
#: Comma-separated plugin names that are never imported.
DISABLE_ENV = "LCCORE_DISABLE_PLUGINS"


@attrs.frozen
class Component:
    """One registered component: which kind, which name, which plugin gave it, how to build it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    options: type | None = None
    description: str = ""


@attrs.define
class PluginInfo:
    """What ``lccore plugins`` reports for one plugin."""

    name: str
    module: str | None = None
    distribution: str | None = None
    version: str | None = None
    status: str = "loaded"  # loaded | failed | disabled
    reason: str | None = None
    components: dict[str, list[str]] = attrs.Factory(dict)
    commands: list[str] = attrs.Factory(list)  # the subcommands it added (register_commands)

    def to_dict(self) -> dict:
        return attrs.asdict(self)


_WARNED_DISABLED: set[str] = set()


def _warn_unknown_disabled(disabled: set[str], plugins: dict) -> None:
    """A name to disable that no installed plugin has is a typo more often than not: say so, once."""
    import difflib

    for name in sorted(disabled - set(plugins) - _WARNED_DISABLED):
        _WARNED_DISABLED.add(name)
        close = difflib.get_close_matches(name, list(plugins), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; installed: {', '.join(sorted(plugins))}"
        print(f"lccore: warning: {DISABLE_ENV} or plugins.disable names '{name}', which no installed plugin is called{hint}", file=sys.stderr, flush=True)


def disabled_from_env() -> list[str]:
    return [name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()]


class Engine:
    """A set of plugins and the components they registered.

    ``Engine()`` discovers installed plugins through the ``lccore`` entry-point group.
    ``Engine(entry_points=False, plugins=[module, ...])`` uses exactly the given plugins.
    ``disable`` (plus the ``LCCORE_DISABLE_PLUGINS`` environment variable) names plugins that are
    skipped before they are imported.
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        plugins: Iterable[Any] = (),
        disable: Iterable[str] = (),
        use_env: bool = True,
    ):
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self.disabled = set(disable) | (set(disabled_from_env()) if use_env else set())
        self.plugins: dict[str, PluginInfo] = {}
        self._components: dict[str, dict[str, list[Component]]] = {k: {} for k in hookspecs.COMPONENT_KINDS}
        self._warned: set[tuple[str, str]] = set()

        if entry_points:
            for entry_point in _lccore_entry_points():
                dist = getattr(entry_point, "dist", None)
                info = PluginInfo(
                    name=entry_point.name,
                    module=entry_point.value,
                    distribution=dist.name if dist else None,
                    version=dist.version if dist else None,
                )
                self._add(info, entry_point.load)
        for plugin in plugins:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            self._add(PluginInfo(name=name, module=name), lambda plugin=plugin: plugin)
        if entry_points:
            _warn_unknown_disabled(self.disabled, self.plugins)

    # --- loading ---------------------------------------------------------------------------------

    def _add(self, info: PluginInfo, load: Callable[[], Any]) -> None:
        if info.name in self.plugins:  # entry-point names may collide: the first (lccore's own first) keeps it
            previous = self.plugins[info.name]
            info.status, info.reason = "failed", (
                f"plugin name '{info.name}' is already taken by {_origin(previous)} ({previous.module}); "
                f"{_origin(info)} ({info.module}) is not loaded: its entry point needs another name"
            )
            self.plugins[f"{info.name} ({_origin(info)})"] = info
            return
        self.plugins[info.name] = info
        if info.name in self.disabled:
            info.status, info.reason = "disabled", "disabled by configuration"
            return
        try:
            # A plugin that prints at import must not corrupt what lccore writes to stdout (predict's JSONL).
            with contextlib.redirect_stdout(sys.stderr):
                plugin = load()
        except PLUGIN_FAILURES as exc:  # a broken plugin must not take the others (or lccore) down
            info.status, info.reason = "failed", f"import failed: {_describe_failure(exc)}"
            return
        if self._pm.is_registered(plugin):  # the same module given again (installed, and passed to Engine(plugins=...)): one plugin
            del self.plugins[info.name]
            return
        try:
            _check_hook_names(plugin)
            self._pm.register(plugin, name=info.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            info.status, info.reason = "failed", f"bad hook: {exc}"
            return
        try:
            with contextlib.redirect_stdout(sys.stderr):
                found = self._collect(info.name)
        except PLUGIN_FAILURES as exc:
            self._pm.unregister(name=info.name)
            info.status, info.reason = "failed", f"registration raised {_describe_failure(exc)}"
            return
        for component in found:
            self._components[component.kind].setdefault(component.name, []).append(component)
            info.components.setdefault(component.kind, []).append(component.name)

    def _collect(self, plugin_name: str) -> list[Component]:
        """Call this plugin's registration hooks; nothing is kept unless all of them succeed."""
        found: list[Component] = []
        for kind, hook_name in hookspecs.COMPONENT_KINDS.items():
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name != plugin_name:
                    continue

                def register(name, factory, *, options=None, description="", _kind=kind):
                    if not isinstance(name, str) or not name:
                        raise ValueError(f"{_kind} name must be a non-empty string, got {name!r}")
                    if not callable(factory):
                        raise ValueError(f"{_kind} '{name}': factory must be callable")
                    if options is not None and not attrs.has(options):
                        raise ValueError(f"{_kind} '{name}': options must be an attrs class")
                    found.append(Component(_kind, name, factory, plugin_name, options, description))

                impl.function(**{arg: register for arg in impl.argnames})
        return found

    # --- looking up components -------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        _check_kind(kind)
        return sorted(self._components[kind])

    def owners(self, kind: str, name: str) -> list[Component]:
        """Every registration of ``name`` (more than one is a conflict)."""
        _check_kind(kind)
        return list(self._components[kind].get(name, []))

    def component(self, kind: str, name: str, *, key: str | None = None, plugin: str | None = None) -> Component:
        """The component ``name`` of ``kind``; a clear :class:`PluginError` if unknown or ambiguous.
        ``plugin``: the plugin that gave it before (a finished run's manifest records it): its
        registration is taken even when another plugin registers the same name since."""
        _check_kind(kind)
        registered = self._components[kind].get(name)
        where = f"{key}: " if key else ""
        recorded = [c for c in registered or () if c.plugin == plugin]
        if plugin is not None and recorded:
            return recorded[0]
        if not registered:
            known = ", ".join(self.names(kind)) or "none"
            hint = close_matches(name, self.names(kind))
            blocked = [p.name for p in self.plugins.values() if p.status != "loaded"]
            extra = f"; plugins not loaded: {', '.join(blocked)} (see 'lccore plugins')" if blocked else ""
            raise PluginError(f"{where}unknown {kind} '{name}'{hint}; known: {known}{extra}")
        if len(registered) > 1:
            owners = " and ".join(f"'{c.plugin}' ({_origin(self.plugins[c.plugin])})" for c in registered)
            gone = f"the run's own plugin '{plugin}' is not installed, and " if plugin is not None else ""
            raise PluginError(
                f"{where}{gone}{kind} '{name}' is registered by two plugins: {owners}; "
                f"disable one with {DISABLE_ENV} or the config key plugins.disable"
            )
        if plugin is not None and (plugin, f"{kind}:{name}") not in self._warned:
            # the run's own plugin is gone; one other plugin gives the name: use it, but say so
            self._warned.add((plugin, f"{kind}:{name}"))
            print(
                f"lccore: warning: {where}{kind} '{name}' was given by plugin '{plugin}', which is not installed; "
                f"using the one from '{registered[0].plugin}' ({_origin(self.plugins[registered[0].plugin])})",
                file=sys.stderr, flush=True,
            )
        return registered[0]

    def create(self, kind: str, name: str, options: dict | None = None, *, key: str | None = None, plugin: str | None = None, **kwargs):
        """Build the component ``name`` of ``kind`` with validated ``options`` (``plugin``: as :meth:`component`)."""
        component = self.component(kind, name, key=key, plugin=plugin)
        return self.instantiate(component, self.parse_options(component, options or {}, key=key or kind), **kwargs)

    def instantiate(self, component: Component, parsed, *args, **kwargs):
        """``component.factory`` called with ``parsed`` options (when it was registered with
        ``options=``) and ``args``; a factory that cannot take them is a :class:`PluginError` naming
        the plugin and the file and line of the factory."""
        arguments = ((parsed,) if component.options is not None else ()) + args
        _check_factory_call(component, arguments, kwargs)
        built = component.factory(*arguments, **kwargs)
        if built is None:  # a factory that forgot its return: said here, not as an AttributeError later
            raise PluginError(f"{component.kind} '{component.name}' of plugin '{component.plugin}': its factory ({defined_at(component.factory)}) returned None")
        return built

    def parse_options(self, component: Component, options: dict, *, key: str):
        from .typed import structure

        if component.options is None:
            if options:
                first = sorted(options)[0]
                raise ConfigError(f"{key}.{first}: unknown key; {component.kind} '{component.name}' takes no options")
            return None
        return structure(component.options, options, key)

    def plugin_of(self, kind: str, name: str) -> PluginInfo:
        return self.plugins[self.component(kind, name).plugin]

    # --- lifecycle -------------------------------------------------------------------------------

    def notify(self, event: str, **kwargs) -> None:
        """Tell every plugin observing ``event``; an observer that raises is reported, not fatal."""
        if event not in hookspecs.LIFECYCLE_EVENTS:
            raise ValueError(f"unknown lifecycle event {event!r}")
        for impl in reversed(getattr(self._pm.hook, event).get_hookimpls()):  # pluggy's call order
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception as exc:
                if (impl.plugin_name, event) not in self._warned:
                    self._warned.add((impl.plugin_name, event))
                    log.warning("plugin '%s' raised in %s: %s: %s", impl.plugin_name, event, type(exc).__name__, exc)

    def add_commands(self, commands) -> None:
        """Let every plugin add its subcommands (``register_commands``); one that raises is
        reported as a warning and its commands are left out, the others stay."""
        for impl in self._pm.hook.register_commands.get_hookimpls():
            added = getattr(commands, "added", [])
            before = len(added)
            try:
                impl.function(commands=commands)
            except PLUGIN_FAILURES as exc:
                log.warning("plugin '%s' could not add its commands: %s", impl.plugin_name, _describe_failure(exc))
            if impl.plugin_name in self.plugins:
                self.plugins[impl.plugin_name].commands = added[before:]

    def add_routes(self, server_for) -> list[tuple[str, Any]]:
        """Let every plugin add HTTP endpoints (``register_routes``) to ``server_for(plugin)``;
        returns ``(plugin, server)`` for those that did not raise (one that raises is a warning)."""
        added = []
        for impl in reversed(self._pm.hook.register_routes.get_hookimpls()):  # in plugin order
            server = server_for(impl.plugin_name)
            try:
                impl.function(server=server)
            except PLUGIN_FAILURES as exc:
                log.warning("plugin '%s' could not add its routes: %s", impl.plugin_name, _describe_failure(exc))
                continue
            added.append((impl.plugin_name, server))
        return added

    def report(self) -> list[dict]:
        return [info.to_dict() for info in self.plugins.values()]


def _check_factory_call(component: Component, args: tuple, kwargs: dict) -> None:
    """A factory that cannot take what lccore passes (an options object when it was registered
    with ``options=``, nothing otherwise) is the plugin's mistake: say which, and where its code is."""
    import inspect

    try:
        signature = inspect.signature(component.factory)
    except (TypeError, ValueError):  # a builtin or C callable: let the call speak
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        where = f" ({defined_at(component.factory)})"
        given = "an options object (it was registered with options=)" if args else "no argument (it was registered without options=)"
        raise PluginError(f"{component.kind} '{component.name}' of plugin '{component.plugin}': its factory{where} is called with {given}: {exc}") from None


def _lccore_entry_points() -> list:
    seen, unique = set(), []
    # Sorted: the order plugins load in (and so the order of their commands and observers) must
    # not depend on where each distribution happens to be installed.
    # lccore's own plugins first among those of one name: a third party's entry point named `kg` does not displace lccore's
    first_party = lambda e: getattr(getattr(e, "dist", None), "name", None) == "lccore"  # noqa: E731
    for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, not first_party(e), e.value)):
        if (entry_point.name, entry_point.value) not in seen:  # an editable and a normal install
            seen.add((entry_point.name, entry_point.value))
            unique.append(entry_point)
    return unique


#: What a plugin's import or registration may raise without ending lccore: any error, and also
#: sys.exit() and a KeyboardInterrupt raised by the plugin's own code.
PLUGIN_FAILURES = (Exception, SystemExit, KeyboardInterrupt)


def _describe_failure(exc: BaseException) -> str:
    """One line for the plugin report."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(message) > 300:
        message = message[:300] + " ..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _check_hook_names(plugin) -> None:
    """A hook implementation that matches no spec is a typo: refuse it instead of ignoring it."""
    known = set(hookspecs.COMPONENT_KINDS.values()) | set(hookspecs.LIFECYCLE_EVENTS) | set(hookspecs.EXTENSION_HOOKS)
    for attr in dir(plugin):
        value = getattr(plugin, attr, None)
        if callable(value) and hasattr(value, f"{hookspecs.PROJECT}_impl") and attr not in known:
            raise ValueError(f"hook implementation '{attr}' matches no hook spec{close_matches(attr, known)}")


def _check_kind(kind: str) -> None:
    if kind not in hookspecs.COMPONENT_KINDS:
        raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(hookspecs.COMPONENT_KINDS)}")


def _origin(info: PluginInfo) -> str:
    if info.distribution:
        return f"{info.distribution} {info.version}"
    return f"module {info.module}"

"""`poetry add numpy` in a project that supports Python 3.11 writes `^` of numpy's newest release, which needs 3.12,
and the lock then fails (python-poetry/poetry#9295, #5453): Poetry's version selector never reads a candidate's
Requires-Python. This plugin gives `add` the newest release whose Requires-Python admits every Python the project
supports. When a version is given, or no release fits, Poetry chooses as it always has (and its error says why).
"""

from __future__ import annotations

from typing import Any

from cleo.events.console_command_event import ConsoleCommandEvent
from cleo.events.console_events import COMMAND
from cleo.events.event_dispatcher import EventDispatcher
from poetry.console.application import Application
from poetry.console.commands.add import AddCommand
from poetry.factory import Factory
from poetry.plugins.application_plugin import ApplicationPlugin


class CompatibleAdd(ApplicationPlugin):  # type: ignore[misc]  # Poetry is not installed where mypy checks
    def activate(self, application: Application) -> None:
        if application.event_dispatcher is not None:
            application.event_dispatcher.add_listener(COMMAND, _on_command)


def _on_command(event: ConsoleCommandEvent, _event_name: str, _dispatcher: EventDispatcher) -> None:
    command = event.command
    if not isinstance(command, AddCommand):
        return
    poetrys_choice = command._find_best_version_for_package

    def choose(name: str, required_version: str | None = None, **options: Any) -> tuple[str, str]:
        if required_version is None:
            found = _newest_supported(command, name, options.get("allow_prereleases"), options.get("source"))
            if found is not None:
                return found
        return poetrys_choice(name, required_version, **options)  # type: ignore[no-any-return]

    command._find_best_version_for_package = choose


def _newest_supported(
    command: AddCommand, name: str, allow_prereleases: bool | None, source: str | None
) -> tuple[str, str] | None:
    """`(name, "^version")` of the newest release every Python of the project can install, skipping pre-releases
    by Poetry's own rule (unless allowed, or there is nothing else); None when there is no such release."""
    supported = command.poetry.package.python_constraint
    pool = command._get_pool()
    dependency = Factory.create_dependency(
        name, {"version": "*", "allow-prereleases": allow_prereleases, "source": source}
    )
    candidates = sorted(pool.find_packages(dependency), key=lambda candidate: candidate.version, reverse=True)
    only_prereleases = all(candidate.version.is_unstable() for candidate in candidates)
    newest = None
    for candidate in candidates:
        if candidate.is_prerelease() and not dependency.allows_prereleases() and not only_prereleases:
            continue
        package = pool.package(candidate.name, candidate.version, repository_name=candidate.source_reference)
        newest = newest or package
        if package.python_constraint.allows_all(supported):
            version = candidate.version.without_local().to_string()
            if package is not newest:
                command.line(
                    f"<c1>{newest.pretty_name}</c1> {newest.version} needs Python {newest.python_versions}:"
                    f" using <b>{version}</b>, its newest release for this project's Python ({supported})"
                )
            return str(candidate.pretty_name), f"^{version}"
    return None

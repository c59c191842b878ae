"""The PowerSchool plugin the service ships (``plugin/plugin.xml``), parsed into its grants.

PowerSchool gives API access only through an installed plugin: ``<oauth/>`` creates the client
credentials, ``<access_request>`` names every table field the client may read (``ViewOnly``) or
write (``FullAccess``), and ``<oauth accessLevelV1Api=...>`` gates ``/ws/v1``. plugin.xml has no
element for core PowerQueries (PowerSchool allows one when the plugin holds every field it
reads), so the file lists the ones the service calls as ``<?writeback-powerquery NAME?>``
processing instructions, which PowerSchool ignores.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from types import MappingProxyType

_NS = "{http://plugin.powerschool.pearson.com}"
_QUERY_PI = "writeback-powerquery"
_V1_LEVELS = frozenset({"NONE", "READ", "FULL"})
# PowerSchool's limit on table and field names in access_request.
_MAX_NAME = 30


class Access(StrEnum):
    """A field's access level in ``access_request``, spelled as in plugin.xml."""

    VIEW_ONLY = "ViewOnly"
    FULL_ACCESS = "FullAccess"


class PluginError(ValueError):
    """The file is not a plugin.xml this service can use; the message says what is wrong."""


@dataclass(frozen=True)
class PluginGrants:
    """What one plugin.xml asks PowerSchool for. Table and field names are case-insensitive
    (PowerSchool's are) and reported upper-case."""

    name: str
    version: str
    oauth: bool
    v1_access: str
    """``accessLevelV1Api``: ``NONE`` (also when absent), ``READ`` or ``FULL``."""
    queries: frozenset[str]
    """The PowerQueries the plugin declares, by full name."""
    _fields: Mapping[str, Mapping[str, Access]] = field(repr=False)

    @property
    def tables(self) -> tuple[str, ...]:
        """Every table with at least one requested field, in file order."""
        return tuple(self._fields)

    def fields(self, table: str) -> dict[str, Access]:
        """The requested fields of ``table`` with their access; empty for a table not named."""
        return dict(self._fields.get(table.upper(), {}))

    def allows(self, table: str, field: str, write: bool = False) -> bool:
        """Whether PowerSchool lets the plugin read (or, with ``write``, write) ``table.field``:
        any requested access reads, only ``FullAccess`` writes."""
        access = self._fields.get(table.upper(), {}).get(field.upper())
        if access is None:
            return False
        return access is Access.FULL_ACCESS or not write


def plugin_path() -> Path:
    """The plugin.xml shipped inside the ``service.powerschool`` package."""
    return Path(str(resources.files("service.powerschool") / "plugin" / "plugin.xml"))


def load_plugin(path: str | Path | None = None) -> PluginGrants:
    """Parse a plugin.xml (default: the shipped one) into its grants.

    Raises :class:`PluginError` when the file is not a PowerSchool plugin, an ``access`` is
    neither ViewOnly nor FullAccess, a name is empty or longer than PowerSchool allows, or a
    field is requested twice.
    """
    source = Path(path) if path is not None else plugin_path()
    try:
        text = source.read_bytes()
    except OSError as exc:
        raise PluginError(f"cannot read plugin file {source}: {exc.strerror}") from exc
    return parse_plugin(text)


def parse_plugin(text: bytes | str) -> PluginGrants:
    """Parse plugin.xml content; the rules of :func:`load_plugin` apply."""
    # Our own file or one an operator points at; it declares no DTD or entities to expand.
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_pis=True))  # noqa: S314
    try:
        root = ET.fromstring(text, parser=parser)  # noqa: S314
    except ET.ParseError as exc:
        raise PluginError(f"plugin.xml is not well-formed XML: {exc}") from exc
    if root.tag != f"{_NS}plugin":
        raise PluginError(f"plugin.xml's root must be <plugin xmlns={_NS[1:-1]!r}>")
    oauth = root.find(f"{_NS}oauth")
    v1_access = "NONE" if oauth is None else oauth.get("accessLevelV1Api", "NONE").upper()
    if v1_access not in _V1_LEVELS:
        raise PluginError(f"accessLevelV1Api must be one of {sorted(_V1_LEVELS)}")
    fields: dict[str, dict[str, Access]] = {}
    for element in root.iterfind(f"{_NS}access_request/{_NS}field"):
        table, name = _name(element, "table"), _name(element, "field")
        try:
            access = Access(element.get("access", ""))
        except ValueError:
            raise PluginError(f"{table}.{name}: access must be ViewOnly or FullAccess") from None
        if name in fields.setdefault(table, {}):
            raise PluginError(f"{table}.{name} is requested twice")
        fields[table][name] = access
    queries = frozenset(
        str(pi.text).removeprefix(_QUERY_PI).strip()
        for pi in root.iter()
        if _is_pi(pi) and str(pi.text).split(" ", 1)[0] == _QUERY_PI
    )
    return PluginGrants(
        name=root.get("name", ""),
        version=root.get("version", ""),
        oauth=oauth is not None,
        v1_access=v1_access,
        queries=queries,
        _fields=_freeze(fields),
    )


def _is_pi(element: ET.Element) -> bool:
    # typeshed types Element.tag as str, but a processing instruction's tag is the factory.
    tag: object = element.tag
    return tag is ET.ProcessingInstruction


def _name(element: ET.Element, attribute: str) -> str:
    value = (element.get(attribute) or "").strip().upper()
    if not value or len(value) > _MAX_NAME:
        raise PluginError(
            f"access_request <field> needs a {attribute} name of 1 to {_MAX_NAME} characters"
        )
    return value


def _freeze(fields: Mapping[str, Mapping[str, Access]]) -> Mapping[str, Mapping[str, Access]]:
    return MappingProxyType({t: MappingProxyType(dict(fs)) for t, fs in fields.items()})

"""A plugin as a district might have installed it: the shipped grants minus a field or a
PowerQuery, to see what the service does when PowerSchool refuses them."""

from __future__ import annotations

from dataclasses import replace

from service.powerschool import PluginGrants


def without_field(grants: PluginGrants, table: str, field: str) -> PluginGrants:
    """A copy of ``grants`` that does not request ``table.field``."""
    fields = {t: grants.fields(t) for t in grants.tables}
    fields.get(table.upper(), {}).pop(field.upper(), None)
    return replace(grants, _fields={t: fs for t, fs in fields.items() if fs})


def without_query(grants: PluginGrants, name: str) -> PluginGrants:
    """A copy of ``grants`` that does not declare the PowerQuery ``name``."""
    return replace(grants, queries=grants.queries - {name})

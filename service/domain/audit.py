"""The audit trail: who changed a district's settings or secrets, created or revoked a
caller, or retried or cancelled attendance, and what changed. A secret's change is recorded
as "changed", never with its value."""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

from service.models import AuditEvent, Caller, District
from service.store import AuditStore

# Kept by the service itself, not set by whoever saves the district.
_NOT_SETTINGS = frozenset({"created_at", "updated_at", "last_sync_at", "last_sync_error"})
CHANGED = "changed"


def _is_secret(f: dataclasses.Field[Any]) -> bool:
    # The models mark every secret repr=False so it never reaches a repr; the same mark keeps
    # its value out of the audit trail.
    return not f.repr


def _diff(before: Any, after: Any, path: str, out: dict[str, str]) -> None:
    for f in dataclasses.fields(after):
        name = f"{path}{f.name}"
        if not path and f.name in _NOT_SETTINGS:
            continue
        old, new = getattr(before, f.name), getattr(after, f.name)
        if f.name == "schools":
            _diff_schools(old, new, out)
        elif dataclasses.is_dataclass(new):
            _diff(old, new, f"{name}.", out)
        elif old != new:
            out[name] = CHANGED if _is_secret(f) else _shown(new)


def _diff_schools(old: tuple[Any, ...], new: tuple[Any, ...], out: dict[str, str]) -> None:
    before = {s.school_number: s for s in old}
    after = {s.school_number: s for s in new}
    for number in sorted(before.keys() | after.keys()):
        if number not in after:
            out[f"schools[{number}]"] = "removed"
        elif number not in before:
            out[f"schools[{number}]"] = "added"
        else:
            _diff(before[number], after[number], f"schools[{number}].", out)


def _shown(value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, tuple | frozenset) else str(value)
    return text[:200]


def district_changes(before: District | None, after: District) -> dict[str, str]:
    """Each changed setting's dotted name (``powerschool.base_url``,
    ``schools[100].late_check_in_code``) with its new value, or "changed" for a secret;
    against a new district's defaults when there was none before."""
    out: dict[str, str] = {}
    _diff(before or District(district_id=after.district_id), after, "", out)
    return out


class Audit:
    """Records changes and reads them back."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store

    async def _record(self, actor: Caller, action: str, **event: Any) -> None:
        await self._store.record(
            caller_id=actor.caller_id, caller_name=actor.name, action=action, **event
        )

    async def district_saved(self, actor: Caller, before: District | None, after: District) -> None:
        """A district created or updated; nothing is recorded when no setting changed."""
        changes = district_changes(before, after)
        if before is not None and not changes:
            return
        await self._record(
            actor,
            "district_created" if before is None else "district_updated",
            district_id=after.district_id,
            changed_fields=sorted(changes),
            details=changes,
        )

    async def caller_created(self, actor: Caller, caller: Caller) -> None:
        """A caller created (its token is never recorded)."""
        await self._record(
            actor,
            "caller_created",
            target=caller.caller_id,
            details={
                "name": caller.name,
                "role": caller.role.name.lower(),
                "districts": "*" if caller.all_districts else ",".join(sorted(caller.district_ids)),
            },
        )

    async def caller_revoked(self, actor: Caller, caller: Caller) -> None:
        """A caller revoked."""
        await self._record(
            actor, "caller_revoked", target=caller.caller_id, details={"name": caller.name}
        )

    async def attendance_retried(
        self,
        actor: Caller,
        district_id: str,
        record_id: str,
        *,
        first: date | None,
        last: date | None,
        count: int,
    ) -> None:
        """A manual retry of one record or a date range."""
        details = {"retried": str(count)}
        if first is not None and last is not None:
            details |= {"date_from": first.isoformat(), "date_to": last.isoformat()}
        await self._record(
            actor, "attendance_retried", district_id=district_id, target=record_id, details=details
        )

    async def attendance_cancelled(
        self, actor: Caller, district_id: str, record_id: str, reason: str
    ) -> None:
        """A manual cancel of one record."""
        await self._record(
            actor,
            "attendance_cancelled",
            district_id=district_id,
            target=record_id,
            details={"reason": reason[:200]},
        )

    async def page(
        self, *, district_id: str, visible: frozenset[str] | None, page_size: int, before: int
    ) -> list[AuditEvent]:
        """A page of events, newest first (see :meth:`AuditStore.page`)."""
        return await self._store.page(
            district_id=district_id, visible=visible, before=before, limit=page_size
        )

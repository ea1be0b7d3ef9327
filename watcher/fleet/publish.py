"""`publish --rollout`: write the rollout record, then the document.

Order matters: a daemon decides about a new revision only with a record read after it saw
the revision (view.py), so writing the record first means no daemon can see the document
without its rollout. On Nacos, whose read side follows a write a moment later, the record is
read back before the document is written. Should the document's write fail (a lost
`--if-revision` race, an outage), the record is aborted, so it can never steer a later
publish of the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from watcher.core.errors import ConflictError, SourceError
from watcher.fleet.backend import FleetBackend
from watcher.fleet.decide import end
from watcher.fleet.feature import create_backend
from watcher.fleet.record import RolloutPolicy, RolloutRecord, new_id
from watcher.fleet.settings import fleet_settings
from watcher.observability.audit import _actor
from watcher.settings import Settings
from watcher.sources.base import Publisher

log = logging.getLogger("watcher.fleet.publish")
READ_BACK = 5.0


async def publish_with_rollout(settings: Settings, publisher: Publisher, model: str, raw: bytes,
                               version: str, policy: RolloutPolicy,
                               if_revision: str | None) -> tuple[str, RolloutRecord]:
    """Start a rollout of `raw` as `model`; returns (the document's revision, the record)."""
    fleet = fleet_settings(settings, require_enabled=False)
    assert fleet is not None
    backend, _ = create_backend(fleet, settings)
    try:
        existing = await backend.read_rollout(model)
        current = await backend.read_document(model)
        now = time.time()
        record = RolloutRecord(id=new_id(), model=model, sha256=hashlib.sha256(raw).hexdigest(),
                               version=version, previous=current.revision if current else "",
                               policy=policy, created_at=now, updated_at=now,
                               created_by=_actor())
        if await backend.write_rollout(record, existing.version if existing else None) is None:
            raise ConflictError(f"{model}: another rollout was started meanwhile; re-run")
        await _read_back(backend, record)
        try:
            revision = await publisher.publish(model, raw, if_revision=if_revision)
        except BaseException:
            await _abandon(backend, record)
            raise
        return revision, record
    finally:
        await backend.aclose()


async def _read_back(backend: FleetBackend, record: RolloutRecord) -> None:
    """Until a read returns the record just written (Nacos's read side lags a write)."""
    deadline = time.monotonic() + READ_BACK
    while time.monotonic() < deadline:
        stored = await backend.read_rollout(record.model)
        if stored is not None and stored.record.id == record.id:
            return
        await asyncio.sleep(0.1)
    raise SourceError(f"{record.model}: the rollout record did not read back within "
                      f"{READ_BACK:g}s; the document was not published")


async def _abandon(backend: FleetBackend, record: RolloutRecord) -> None:
    try:
        stored = await backend.read_rollout(record.model)
        if stored is not None and stored.record.id == record.id:
            gone = end(stored.record, time.time(), "aborted",
                       "the publish of its document failed; nothing was rolled out")
            await backend.write_rollout(gone, stored.version)
    except SourceError as exc:
        log.error("%s: rollout %s could not be marked aborted: %s", record.model, record.id,
                  exc.reason)

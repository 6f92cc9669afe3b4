"""Proxy delegations to ARC CEs: one per (credential, CE), shared by every act process.

The delegation id and its expiry live in the ``delegations`` table. A process asks
:meth:`Delegations.get` for the id to put in its job descriptions; it gets the stored one, renewed
at the CE first when less than ``renew_margin`` seconds are left, or a new one when there is none
or the CE no longer knows it (a CE that lost its state: the renewal answers 404, or the id is not in
the CE's delegation list, checked at most every ``verify_interval`` seconds per process, or a
submission names a delegation error — then the back end calls :meth:`Delegations.recreate` and
retries once).

Two processes creating the first delegation for a pair at the same time both succeed at the CE;
the unique (credential, ce) row decides which one is kept, the other is deleted at the CE.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection

from act.arc.proxy import load_credential, sign_request
from act.arc.rest import ArcRest, RestError
from act.common.db import Database
from act.common.schema import delegations
from act.common.timeutil import utcnow


@dataclass(frozen=True)
class Delegation:
    delegation_id: str
    expires_at: datetime


class Delegations:
    """Finds, creates and renews delegations; one instance per back end (per process)."""

    def __init__(
        self,
        db: Database | None,
        log: logging.Logger,
        *,
        lifetime: float = 4 * 86400.0,
        renew_margin: float = 86400.0,
        verify_interval: float = 600.0,
    ) -> None:
        self.db = db
        self.log = log
        self.lifetime = lifetime
        self.renew_margin = renew_margin
        self.verify_interval = verify_interval
        self._memory: dict[tuple[str, str], Delegation] = {}  # without a database
        self._verified: dict[tuple[str, str, str], float] = {}  # (cred, ce, id) -> monotonic
        self._warned: set[tuple[str, str, str]] = set()

    # ------------------------------------------------------------------ storage ---
    def stored(self, credential: str, ce: str) -> Delegation | None:
        if self.db is None:
            return self._memory.get((credential, ce))
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(delegations.c.delegation_id, delegations.c.expires_at).where(
                    delegations.c.credential == credential, delegations.c.ce == ce
                )
            ).first()
        return Delegation(row.delegation_id, row.expires_at) if row else None

    def _save(self, credential: str, ce: str, new: Delegation, replaces: str | None) -> Delegation:
        """Store ``new``; returns what is stored afterwards (another process's may have won)."""
        if self.db is None:
            self._memory[(credential, ce)] = new
            return new
        now = utcnow()
        where = sa.and_(delegations.c.credential == credential, delegations.c.ce == ce)

        def write(conn: Connection) -> Delegation:
            row = conn.execute(
                sa.select(delegations.c.delegation_id, delegations.c.expires_at).where(where)
            ).first()
            if row is None:
                conn.execute(
                    delegations.insert().values(
                        credential=credential,
                        ce=ce,
                        delegation_id=new.delegation_id,
                        expires_at=new.expires_at,
                        created_at=now,
                        updated_at=now,
                    )
                )
                return new
            if row.delegation_id not in (replaces, new.delegation_id):
                return Delegation(row.delegation_id, row.expires_at)  # another process won
            conn.execute(
                delegations.update()
                .where(where)
                .values(delegation_id=new.delegation_id, expires_at=new.expires_at, updated_at=now)
            )
            return new

        try:
            return self.db.run(write)
        except exc.IntegrityError:  # two first inserts at once: take the other one
            found = self.stored(credential, ce)
            if found is None:
                raise
            return found

    # ------------------------------------------------------------------ the CE ---
    def _create(self, client: ArcRest, credential: str) -> Delegation:
        delegation_id, csr = client.new_delegation()
        pem, expires = sign_request(
            csr, load_credential(credential), timedelta(seconds=self.lifetime)
        )
        client.put_delegation(delegation_id, pem)
        return Delegation(delegation_id, expires)

    def _renew(self, client: ArcRest, credential: str, delegation_id: str) -> Delegation:
        csr = client.renew_delegation(delegation_id)
        pem, expires = sign_request(
            csr, load_credential(credential), timedelta(seconds=self.lifetime)
        )
        client.put_delegation(delegation_id, pem)
        return Delegation(delegation_id, expires)

    def _adopt(self, client: ArcRest, credential: str, ce: str, new: Delegation) -> str:
        kept = self._save(credential, ce, new, None)
        if kept.delegation_id != new.delegation_id:
            with contextlib.suppress(RestError):
                client.delete_delegation(new.delegation_id)
        self._verified[(credential, ce, kept.delegation_id)] = time.monotonic()
        return kept.delegation_id

    def get(self, client: ArcRest, ce: str, credential: str) -> str:
        """A delegation id valid ``renew_margin`` seconds more (or as long as the credential)."""
        found = self.stored(credential, ce)
        if found is None:
            self.log.info("ce=%s: creating a delegation", ce)
            return self._adopt(client, credential, ce, self._create(client, credential))
        key = (credential, ce, found.delegation_id)
        if found.expires_at - utcnow() < timedelta(seconds=self.renew_margin):
            if load_credential(credential).not_after <= found.expires_at + timedelta(minutes=1):
                # A renewal cannot outlive the credential: renewing now would change nothing.
                if key not in self._warned:
                    self._warned.add(key)
                    self.log.warning(
                        "ce=%s: delegation %s ends %s with its credential %s: renew the credential",
                        ce,
                        found.delegation_id,
                        found.expires_at.isoformat(),
                        credential,
                    )
                return found.delegation_id
            try:
                renewed = self._renew(client, credential, found.delegation_id)
            except RestError as error:
                self.log.warning(
                    "ce=%s: delegation %s cannot be renewed (%s): creating a new one",
                    ce,
                    found.delegation_id,
                    error,
                )
                return self.recreate(client, ce, credential, found.delegation_id)
            self.log.info(
                "ce=%s: renewed delegation %s until %s",
                ce,
                found.delegation_id,
                renewed.expires_at.isoformat(),
            )
            kept = self._save(credential, ce, renewed, found.delegation_id)
            self._verified[(credential, ce, kept.delegation_id)] = time.monotonic()
            return kept.delegation_id
        last = self._verified.get(key)
        if last is None or time.monotonic() - last > self.verify_interval:
            if found.delegation_id not in client.delegations():
                self.log.warning(
                    "ce=%s: the CE no longer knows delegation %s: creating a new one",
                    ce,
                    found.delegation_id,
                )
                return self.recreate(client, ce, credential, found.delegation_id)
            self._verified[key] = time.monotonic()
        return found.delegation_id

    def recreate(self, client: ArcRest, ce: str, credential: str, old_id: str) -> str:
        """Replace ``old_id`` (which the CE lost or refused) by a new delegation."""
        new = self._create(client, credential)
        kept = self._save(credential, ce, new, old_id)
        if kept.delegation_id != new.delegation_id:
            with contextlib.suppress(RestError):
                client.delete_delegation(new.delegation_id)
        self._verified.pop((credential, ce, old_id), None)
        self._verified[(credential, ce, kept.delegation_id)] = time.monotonic()
        return kept.delegation_id

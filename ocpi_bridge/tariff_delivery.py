"""Which of our tariffs each peer is owed, and when a push of one may start: the pure core
of the tariffs push (issue 19; the I/O shell is :mod:`ocpi_bridge.tariff_push`).

Facts in, decisions out; no I/O, no clock of its own.

- :func:`gets_pushes`: does a peer receive tariffs at all? It must be active, have
  ``tariffs`` in what the operator lets it receive, and a tariffs Receiver endpoint. MOBI.E
  does not by default (:meth:`ocpi_bridge.peers.PeerPolicy.default`): its OCPI profile
  (phase 1, seed 001 section 3.7) leaves the changing of tariffs by CPOs outside OCPI and
  lists only GET for the Tariffs module (it may pull ours); its phase 2 plans CPOs creating
  and updating tariffs over OCPI, so the operator may add ``tariffs`` to what it receives.
- :func:`owed`: per peer that gets pushes, the tariffs it should hold (every public tariff,
  and the private ones that are its own replacements: :func:`ocpi_bridge.peers.tariffs_for`)
  against what it acknowledged: a PUT for each one it lacks or holds in another state, a
  DELETE for each one it holds and should not (deleted by the operator, or private to
  other peers since).
- :class:`TariffQueue`: what is owed, as pushes: at most ``per_peer`` in flight per peer,
  one at a time per tariff, and a peer whose push failed waits (exponential backoff with
  jitter, as :class:`ocpi_bridge.outbox.Outbox` does) without holding up any other peer.

What a peer acknowledged is one state per tariff (:func:`tariff_state`: the tariff's
``last_updated``, a digest of the object, and the peer's OCPI version, so that a change in
the same second, or a new version, is pushed again) or :data:`UNCONFIRMED`: a first PUT
was sent, its answer is not known, the peer may hold the tariff (a DELETE is owed if it
should not). A tariff it acknowledged the DELETE of has no state at all.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .peers import PeerPolicy, private_tariffs, tariffs_for

PUT = "PUT"
DELETE = "DELETE"
ACK_KIND = "tariff"  # ocpi_push_acks.kind of a tariff's acknowledgement
UNCONFIRMED = "?"  # a PUT went out and its answer is unknown: the peer may hold it
PER_PEER = 2  # pushes of tariffs in flight per peer


# ---------------------------------------------------------------------------- facts


@dataclass(frozen=True, slots=True)
class TariffPeer:
    """A registered peer, as far as tariffs go (suspended ones too: their replacements
    keep a tariff private)."""

    id: int
    policy: PeerPolicy
    version: str
    pushed: bool  # gets pushes of tariffs (:func:`gets_pushes`)


def gets_pushes(policy: PeerPolicy, active: bool, receiver_url: str | None) -> bool:
    """Does a peer get our tariffs pushed?"""
    return active and receiver_url is not None and "tariffs" in policy.receives


@dataclass(frozen=True, slots=True)
class TariffFacts:
    """One of our tariffs: its id, its ``last_updated`` (as OCPI writes it) and a digest
    of its OCPI 2.2.1 object."""

    id: str
    last_updated: str
    digest: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> TariffFacts:
        """From the OCPI 2.2.1 Tariff object we serve."""
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        digest = hashlib.sha256(text.encode("ascii")).hexdigest()[:16]
        return cls(str(obj["id"]), str(obj["last_updated"]), digest)


def tariff_state(tariff: TariffFacts, version: str) -> str:
    """What a peer on ``version`` acknowledges when it took this tariff."""
    return f"{tariff.last_updated}|{tariff.digest}|{version}"


@dataclass(frozen=True, slots=True, order=True)
class Owed:
    peer_id: int
    method: str  # PUT | DELETE
    tariff_id: str  # as we have it (PUT), as the peer acknowledged it (DELETE)

    @property
    def key(self) -> tuple[int, str]:
        return self.peer_id, self.tariff_id.upper()


# what each peer acknowledged: (peer id, tariff id in upper case) -> (tariff id, state)
AckMap = Mapping[tuple[int, str], tuple[str, str]]


def visible(
    policy: PeerPolicy, tariff_ids: Iterable[str], policies: Iterable[PeerPolicy]
) -> list[str]:
    """The tariff ids a peer with ``policy`` sees (pulled or pushed), given the policies of
    every registered peer (whose replacements are private)."""
    return tariffs_for(policy, tariff_ids, private_tariffs(policies))


def owed(peers: Iterable[TariffPeer], tariffs: Iterable[TariffFacts], acks: AckMap) -> list[Owed]:
    """Everything the peers that get pushes are owed: per peer, the PUTs (in the order of
    ``tariffs``), then the DELETEs (by id)."""
    peers = list(peers)
    tariffs = list(tariffs)
    private = private_tariffs(p.policy for p in peers)
    held: dict[int, dict[str, tuple[str, str]]] = {}
    for (peer_id, key), ack in acks.items():
        held.setdefault(peer_id, {})[key] = ack
    by_id = {t.id: t for t in tariffs}
    out: list[Owed] = []
    for peer in sorted(peers, key=lambda p: p.id):
        if not peer.pushed:
            continue
        has = held.get(peer.id, {})
        wanted = tariffs_for(peer.policy, [t.id for t in tariffs], private)
        keys = {w.upper() for w in wanted}
        for tid in wanted:
            ack = has.get(tid.upper())
            if ack is None or ack[1] != tariff_state(by_id[tid], peer.version):
                out.append(Owed(peer.id, PUT, tid))
        for key in sorted(has):
            if key not in keys:
                out.append(Owed(peer.id, DELETE, has[key][0]))
    return out


# ---------------------------------------------------------------------------- pushing


@dataclass
class Job:
    """A push owed to a peer: the PUT or DELETE of one tariff."""

    peer_id: int
    method: str
    tariff_id: str
    since: datetime  # owed since
    attempts: int = 0  # failed so far
    last_error: str | None = None
    in_flight: bool = False

    @property
    def key(self) -> tuple[int, str]:
        return self.peer_id, self.tariff_id.upper()


@dataclass
class PeerState:
    """A peer's backoff: after a failed push, none of its pushes start before
    ``next_attempt``; one success ends it."""

    failures: int = 0
    next_attempt: datetime | None = None
    failing_since: datetime | None = None
    in_flight: int = 0


@dataclass
class TariffQueue:
    per_peer: int = PER_PEER
    backoff_base: timedelta = timedelta(seconds=1)
    backoff_max: timedelta = timedelta(seconds=60)
    rng: Callable[[], float] = random.random
    jobs: dict[tuple[int, str], Job] = field(default_factory=dict)
    peers: dict[int, PeerState] = field(default_factory=dict)

    def update(self, owed: Iterable[Owed], now: datetime) -> None:
        """What is owed now (everything: what is not in it is no longer owed). A push in
        flight is left as it is (the shell calls this again once it ended)."""
        seen: set[tuple[int, str]] = set()
        for o in owed:
            key = o.key
            seen.add(key)
            job = self.jobs.get(key)
            if job is None:
                self.jobs[key] = Job(o.peer_id, o.method, o.tariff_id, now)
            elif not job.in_flight:
                if job.method != o.method:
                    job.since, job.attempts, job.last_error = now, 0, None
                job.method, job.tariff_id = o.method, o.tariff_id
        for key in [k for k, j in self.jobs.items() if k not in seen and not j.in_flight]:
            del self.jobs[key]
        for peer_id in [p for p, s in self.peers.items() if not s.in_flight and not s.failures]:
            if not any(j.peer_id == peer_id for j in self.jobs.values()):
                del self.peers[peer_id]

    def ready(self, now: datetime) -> list[Job]:
        """The pushes that may start now, counted in flight: per peer, those tried least
        first, then the oldest; none of a peer backing off."""
        by_peer: dict[int, list[Job]] = {}
        for job in self.jobs.values():
            if not job.in_flight:
                by_peer.setdefault(job.peer_id, []).append(job)
        out: list[Job] = []
        for peer_id in sorted(by_peer):
            state = self.peers.setdefault(peer_id, PeerState())
            if state.next_attempt is not None and state.next_attempt > now:
                continue
            room = self.per_peer - state.in_flight
            for job in sorted(by_peer[peer_id], key=lambda j: (j.attempts, j.since, j.key)):
                if room <= 0:
                    break
                job.in_flight = True
                state.in_flight += 1
                room -= 1
                out.append(job)
        return out

    def done(self, job: Job, ok: bool, now: datetime, error: str | None = None) -> None:
        """A push ended: acknowledged (the job is over) or failed (tried again after the
        peer's backoff)."""
        job.in_flight = False
        state = self.peers.setdefault(job.peer_id, PeerState())
        state.in_flight = max(0, state.in_flight - 1)
        if ok:
            state.failures, state.next_attempt, state.failing_since = 0, None, None
            if self.jobs.get(job.key) is job:
                del self.jobs[job.key]
            return
        job.attempts += 1
        job.last_error = error
        state.failures += 1
        if state.failing_since is None:
            state.failing_since = now
        delay = self.backoff_base.total_seconds() * 2 ** min(state.failures - 1, 30)
        jittered = delay * (0.5 + self.rng())  # 50 % to 150 %
        wait = min(jittered, self.backoff_max.total_seconds())
        at = now + timedelta(seconds=wait)
        if state.next_attempt is None or at > state.next_attempt:
            state.next_attempt = at

    def next_wakeup(self) -> datetime | None:
        """When a peer backing off, with a push waiting, may start again (None: none)."""
        waiting = {j.peer_id for j in self.jobs.values() if not j.in_flight}
        times = [
            s.next_attempt
            for p, s in self.peers.items()
            if p in waiting and s.next_attempt is not None
        ]
        return min(times) if times else None

    def pending(self) -> list[Job]:
        """Every push owed, in flight or waiting (for the API and the pages)."""
        return sorted(self.jobs.values(), key=lambda j: (j.peer_id, j.since, j.key))

    def failing_since(self, peer_id: int) -> datetime | None:
        state = self.peers.get(peer_id)
        return state.failing_since if state is not None else None

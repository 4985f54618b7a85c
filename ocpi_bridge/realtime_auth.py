"""Real-time authorization (OCPI ``POST tokens/{uid}/authorize``, issue 19).

A card that no pushed token matches is asked of the eMSPs whose policy has
``realtime_auth``; a pushed token whitelisted ``ALLOWED``, ``ALLOWED_OFFLINE`` or ``NEVER``
is asked of the peer that pushed it, when that peer's policy has ``realtime_auth``. A peer
in MOBI.E mode is never asked: MOBI.E's profile is whitelist-only.

The decision is a pure core (:func:`needs_asking`, :func:`parse_reply`, :func:`decide`,
facts in, verdict out); :class:`RealtimeAuth` is the shell that calls the peers: all at
once (at most :data:`MAX_ASKED`), within ``ocpi.realtime_auth_timeout`` seconds of real
time, the first ``ALLOWED`` winning. Answers are cached per (peer, uid, type) for
``ocpi.realtime_auth_cache`` seconds of the bridge's clock; a failure (no answer in time,
an HTTP error, anything that is not an OCPI ``AuthorizationInfo``) is never cached. An
answer's token is checked (the peer's party, the uid asked, OCPI's lengths and TokenType):
it becomes the CdrToken of the Session and CDR (:func:`authorization_record`), so a token
that is not what OCPI allows refuses the answer rather than being stored as sent.

How a pushed token's whitelist is read (OCPI 2.2.1 WhitelistType):

==================  ===============================  ==============================
whitelist           asked (its peer has real-time)   its peer cannot be reached
==================  ===============================  ==============================
``ALWAYS``          never                            (accepted when valid)
``ALLOWED``         yes, when valid                  accepted
``ALLOWED_OFFLINE`` yes, when valid                  accepted
``NEVER``           yes, even when not valid         refused
==================  ===============================  ==============================

A token that is not valid is ``Blocked`` without asking (except ``NEVER``: "always
real-time, even if cached valid = false"). Without real-time authorization for the peer
(MOBI.E, or the operator turned it off) the whitelist alone decides, as before: valid and
``ALWAYS``/``ALLOWED`` is accepted, anything else refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import structlog

from csms.ports import Clock, client_context

from .client import OcpiCallFailed, OcpiClient
from .store import Peer
from .transport import authorization_header, dumps, join_url, new_request_ids

log = structlog.get_logger("ocpi.realtime_auth")

ALLOWED_TYPES = ("ALLOWED", "BLOCKED", "EXPIRED", "NO_CREDIT", "NOT_ALLOWED")
# AllowedType -> the OCPP idTagInfo status
STATUS_OF = {
    "ALLOWED": "Accepted",
    "BLOCKED": "Blocked",
    "EXPIRED": "Expired",
    "NO_CREDIT": "Invalid",
    "NOT_ALLOWED": "Invalid",
}
# when no peer allows a card, the refusal that says the most wins
_REFUSAL_ORDER = ("BLOCKED", "EXPIRED", "NO_CREDIT", "NOT_ALLOWED")
WHITELISTED = ("ALWAYS", "ALLOWED")  # accepted on the whitelist alone
ACCEPTED_UNREACHABLE = ("ALWAYS", "ALLOWED", "ALLOWED_OFFLINE")  # when the eMSP is unreachable
MAX_BODY = 64 * 1024  # bytes of an answer we read (an AuthorizationInfo is a few hundred)
MAX_ASKED = 32  # peers asked at once for one card
MAX_IN_FLIGHT = 64  # authorize requests in flight at once, over all cards
CACHE_ENTRIES = 10_000
_REFERENCE = re.compile(r"[ -~]{1,36}")
_TOKEN_TEXT = re.compile(r"[ -~]{1,36}")  # a token's uid and contract_id: CiString(36)
TOKEN_TYPES = ("AD_HOC_USER", "APP_USER", "OTHER", "RFID")
_PARTY = re.compile(r"[A-Za-z]{2}"), re.compile(r"[A-Za-z0-9]{3}")


# ---------------------------------------------------------------------------- pure core


@dataclass(frozen=True, slots=True)
class Answer:
    """What one peer said about one card.

    ``kind``: ``answer`` (an AuthorizationInfo: ``allowed`` is one of ALLOWED_TYPES),
    ``unknown`` (HTTP 404 / OCPI 2004: the peer does not know the token) or ``failed`` (no
    usable answer: timeout, connection error, HTTP error, not OCPI, ``error`` says which).
    """

    peer_id: int
    kind: str
    allowed: str | None = None
    owner: str | None = None  # "CC/PID" whose token it is, as the answer says
    parent_id_tag: str | None = None  # the token's group_id, when OCPP can carry it
    authorization_reference: str | None = None
    location_id: str | None = None  # the answer allows only this Location
    error: str | None = None
    # the answer's token, as a CdrToken (country_code, party_id upper-case, uid, type,
    # contract_id); None when the answer has none (2.1.1) or an incomplete one
    token: dict[str, str] | None = field(default=None, compare=False)

    @property
    def cacheable(self) -> bool:
        return self.kind == "answer"

    def allows_at(self, location_id: str | None) -> bool:
        """ALLOWED, and not limited to another Location than ``location_id``."""
        if self.allowed != "ALLOWED":
            return False
        if self.location_id is None or location_id is None:
            return True
        return self.location_id.upper() == location_id.upper()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision, as csms's IdTagInfo needs it (and the reference for the Session)."""

    status: str  # Accepted | Blocked | Expired | Invalid
    owner: str | None = None
    parent_id_tag: str | None = None
    authorization_reference: str | None = None
    peer_id: int | None = None  # the peer whose answer decided (None: the whitelist did)
    reason: str = ""
    # a card no pushed token matches, accepted: the token the eMSP answered (as a CdrToken)
    token: dict[str, str] | None = None


def owner_of(token: dict[str, Any]) -> str:
    return f"{str(token['country_code']).upper()}/{str(token['party_id']).upper()}"


def _parent(group: Any) -> str | None:
    return group if isinstance(group, str) and 0 < len(group) <= 20 else None


def tokens_url(peer: Peer) -> str | None:
    """The peer's tokens Sender endpoint (2.1.1 endpoints have no role)."""
    url = peer.endpoint("tokens", "SENDER")
    if url is None and peer.version == "2.1.1":
        url = peer.endpoint("tokens")
    return url


def askable(peer: Peer) -> bool:
    """May this peer be asked to authorize a card? Active, real-time authorization in its
    policy, not MOBI.E (whitelist-only by its profile), an eMSP or a hub, with a tokens
    Sender endpoint."""
    return (
        peer.active
        and peer.policy.realtime_auth
        and not peer.policy.mobie
        and peer.grant_role in ("EMSP", "HUB")
        and tokens_url(peer) is not None
    )


def needs_asking(token: dict[str, Any] | None) -> bool:
    """Is this pushed token (None: no token matches the card) one to ask its eMSP about,
    when the eMSP does real-time authorization?"""
    if token is None:
        return True
    whitelist = token.get("whitelist")
    if whitelist == "NEVER":
        return True
    if whitelist == "ALWAYS" or not token.get("valid"):
        return False
    return whitelist in ("ALLOWED", "ALLOWED_OFFLINE")


def whitelist_only(token: dict[str, Any]) -> Verdict:
    """A pushed token when its peer is not asked (MOBI.E, or no real-time authorization):
    valid and ``ALWAYS``/``ALLOWED`` is accepted; not valid is Blocked; anything else needs
    real-time authorization, which is not done: Invalid."""
    parent = _parent(token.get("group_id"))
    owner = owner_of(token)
    if not token.get("valid"):
        return Verdict("Blocked", owner, parent, reason="not valid")
    if token.get("whitelist") not in WHITELISTED:
        return Verdict("Invalid", owner, parent, reason="needs real-time authorization")
    return Verdict("Accepted", owner, parent, reason="whitelisted")


def decide(
    token: dict[str, Any] | None,
    answers: Sequence[Answer],
    location_id: str | None = None,
    asked: bool = True,
) -> Verdict | None:
    """The decision for one card.

    ``token``: the pushed token that matches the card, or None; ``answers``: what the peers
    asked said, in the order they answered (a peer asked that did not answer in time is a
    ``failed`` answer, or missing); ``location_id``: where the card is presented;
    ``asked``: False when nobody was asked (the whitelist decides).

    None only for a card no token matches and no peer allowed or refused: csms's own rule
    applies then (``id_tags.accept_unknown``, else Invalid).
    """
    if token is not None and (not asked or not needs_asking(token)):
        return whitelist_only(token)
    allowed = next((a for a in answers if a.kind == "answer" and a.allows_at(location_id)), None)
    if token is None:
        if allowed is not None:
            return Verdict(
                "Accepted",
                allowed.owner,
                allowed.parent_id_tag,
                allowed.authorization_reference,
                allowed.peer_id,
                "allowed by the eMSP",
                allowed.token,
            )
        refusals = [a for a in answers if a.kind == "answer"]
        if not refusals:
            return None
        worst = min(refusals, key=_refusal_rank)
        return Verdict(
            _refused(worst),
            None,
            None,
            worst.authorization_reference,
            worst.peer_id,
            f"{_allowed_here(worst, location_id)} from the eMSP",
        )
    owner = owner_of(token)
    parent = _parent(token.get("group_id"))
    if allowed is not None:
        return Verdict(
            "Accepted",
            owner,
            allowed.parent_id_tag or parent,
            allowed.authorization_reference,
            allowed.peer_id,
            "allowed by the eMSP",
        )
    said = next((a for a in answers if a.kind == "answer"), None)
    if said is not None:
        return Verdict(
            _refused(said),
            owner,
            parent,
            said.authorization_reference,
            said.peer_id,
            f"{_allowed_here(said, location_id)} from the eMSP",
        )
    if any(a.kind == "unknown" for a in answers):
        return Verdict("Invalid", owner, parent, reason="the eMSP does not know the token")
    # nobody answered in time: "allowed when the eMSP cannot be reached" (ALLOWED_OFFLINE,
    # and ALLOWED, which the CPO may take from its cache); NEVER is refused
    if token.get("valid") and token.get("whitelist") in ACCEPTED_UNREACHABLE:
        return Verdict("Accepted", owner, parent, reason="the eMSP cannot be reached")
    status = "Invalid" if token.get("valid") else "Blocked"
    return Verdict(status, owner, parent, reason="the eMSP cannot be reached")


def _refused(answer: Answer) -> str:
    """The status of an answer that does not allow the card here (an ALLOWED limited to
    another Location is Invalid here)."""
    if answer.allowed == "ALLOWED":
        return "Invalid"
    return STATUS_OF.get(answer.allowed or "", "Invalid")


def _refusal_rank(answer: Answer) -> int:
    if answer.allowed in _REFUSAL_ORDER:
        return _REFUSAL_ORDER.index(answer.allowed)
    return len(_REFUSAL_ORDER)  # ALLOWED elsewhere: a refusal here, the mildest


def _allowed_here(answer: Answer, location_id: str | None) -> str:
    if answer.allowed == "ALLOWED" and not answer.allows_at(location_id):
        return "ALLOWED at another Location"
    return str(answer.allowed)


def authorization_record(
    verdict: Verdict, id_tag: str, token_type: str, pushed: dict[str, Any] | None
) -> dict[str, Any] | None:
    """What ``ocpi_authorizations`` keeps of a verdict, for the Session and CDR of the charge
    it starts (ocpi_bridge.sessions): only a card accepted by a peer's answer (None
    otherwise: refused, or accepted by the whitelist, or without asking). The token is the
    pushed one (``pushed``) when there is one, else the eMSP's answer's, else (2.1.1, or an
    answer without a complete token) the owner's party with the id tag as uid and
    contract_id."""
    if verdict.status != "Accepted" or verdict.peer_id is None or not verdict.owner:
        return None
    if pushed is not None:
        cc, _, pid = owner_of(pushed).partition("/")
        token = {
            "country_code": cc,
            "party_id": pid,
            "uid": str(pushed["uid"]),
            "type": str(pushed["type"]),
            "contract_id": str(pushed["contract_id"]),
        }
    elif verdict.token is not None:
        token = dict(verdict.token)
    else:
        cc, _, pid = verdict.owner.partition("/")
        token = {
            "country_code": cc,
            "party_id": pid,
            "uid": id_tag,
            "type": token_type,
            "contract_id": id_tag,
        }
    return {
        "id_tag": id_tag.upper(),
        "owner": verdict.owner,
        **token,
        "authorization_reference": verdict.authorization_reference,
        "peer_id": verdict.peer_id,
    }


def location_references(
    location: dict[str, Any] | None, version: str, hidden: Callable[[str], bool]
) -> dict[str, Any] | None:
    """The LocationReferences sent with an authorize (None: no body): the station's Location
    id and EVSE uids (2.1.1: and the connector ids). A Location hidden from the peer
    (``hidden(location_id)``) is not named to it."""
    if location is None or not isinstance(location.get("id"), str) or hidden(location["id"]):
        return None
    evses = [e for e in location.get("evses") or [] if isinstance(e.get("uid"), str)]
    body: dict[str, Any] = {
        "location_id": location["id"],
        "evse_uids": [e["uid"] for e in evses],
    }
    if version == "2.1.1":
        connectors: list[str] = []
        for e in evses:
            for c in e.get("connectors") or []:
                cid = c.get("id")
                if isinstance(cid, str) and cid not in connectors:
                    connectors.append(cid)
        body["connector_ids"] = connectors
    return body


def parse_reply(
    peer_id: int,
    http_status: int,
    body: Any,
    owns: Callable[[str, str], bool],
    default_owner: str | None,
    uid: str | None = None,
) -> Answer:
    """A peer's HTTP answer to an authorize, as an :class:`Answer` (pure; ``body`` is the
    parsed JSON, or None when it was not JSON). ``owns(cc, pid)``: may this peer speak for
    that party (an answer naming another party's token is refused); ``default_owner``:
    the owner when the answer names none (2.1.1's AuthorizationInfo has no token); ``uid``:
    the uid asked (an answer about another token is refused).

    The answer's token is kept (for the Session and CDR) when it has a uid, type and
    contract_id; one of them absent: not kept; one of them not what OCPI allows (not a
    string of 1 to 36 printable ASCII characters, not a TokenType, another uid): the answer
    is refused, never stored as sent."""

    def failed(error: str) -> Answer:
        return Answer(peer_id, "failed", error=error)

    code = body.get("status_code") if isinstance(body, dict) else None
    if http_status == 404 or code == 2004:
        return Answer(peer_id, "unknown", error=f"HTTP {http_status}, unknown token")
    if not 200 <= http_status < 300:
        return failed(f"HTTP {http_status}")
    if not isinstance(body, dict):
        return failed(f"HTTP {http_status}, not an OCPI answer")
    if isinstance(code, bool) or not isinstance(code, int):
        return failed("no OCPI status_code")
    if code != 1000:
        return failed(f"OCPI {code}")
    data = body.get("data")
    if isinstance(data, list) and len(data) == 1:  # (some peers wrap one object in a list)
        data = data[0]
    if not isinstance(data, dict):
        return failed("no AuthorizationInfo in data")
    allowed = data.get("allowed")
    if not isinstance(allowed, str) or allowed not in ALLOWED_TYPES:
        return failed("allowed is not an AllowedType")
    owner = default_owner
    token = data.get("token")
    if isinstance(token, dict) and "country_code" in token and "party_id" in token:
        cc, pid = token.get("country_code"), token.get("party_id")
        if not (
            isinstance(cc, str)
            and isinstance(pid, str)
            and _PARTY[0].fullmatch(cc)
            and _PARTY[1].fullmatch(pid)
        ):
            return failed("token with an invalid country_code or party_id")
        if not owns(cc.upper(), pid.upper()):
            return failed(f"token of a party the peer does not represent ({cc.upper()}/...)")
        owner = f"{cc.upper()}/{pid.upper()}"
    elif token is not None and not isinstance(token, dict):
        return failed("token is not an object")
    cdr_token = None
    if isinstance(token, dict) and owner is not None:
        problem, cdr_token = _answered_token(token, owner, uid)
        if problem:
            return failed(problem)
    reference = data.get("authorization_reference")
    if not (isinstance(reference, str) and _REFERENCE.fullmatch(reference)):
        reference = None
    location = data.get("location")
    only = None
    if isinstance(location, dict) and isinstance(location.get("location_id"), str):
        only = location["location_id"][:36]
    return Answer(
        peer_id,
        "answer",
        allowed=allowed,
        owner=owner,
        parent_id_tag=_parent(token.get("group_id")) if isinstance(token, dict) else None,
        authorization_reference=reference,
        location_id=only,
        token=cdr_token,
    )


def _answered_token(
    token: dict[str, Any], owner: str, uid: str | None
) -> tuple[str | None, dict[str, str] | None]:
    """(what is wrong with it, or None; the token as a CdrToken, or None when incomplete)."""
    fields = {k: token.get(k) for k in ("uid", "type", "contract_id")}
    for key in ("uid", "contract_id"):
        value = fields[key]
        if value is not None and not (isinstance(value, str) and _TOKEN_TEXT.fullmatch(value)):
            return f"token {key} is not 1 to 36 printable characters", None
    kind = fields["type"]
    if kind is not None and not (isinstance(kind, str) and kind.upper() in TOKEN_TYPES):
        return "token type is not a TokenType", None
    answered = fields["uid"]
    if uid is not None and answered is not None and answered.upper() != uid.upper():
        return "token of another uid", None
    if answered is None or kind is None or fields["contract_id"] is None:
        return None, None
    cc, _, pid = owner.partition("/")
    return None, {
        "country_code": cc,
        "party_id": pid,
        "uid": uid if uid is not None else answered,  # (the same, but as the station read it)
        "type": kind.upper(),
        "contract_id": fields["contract_id"],
    }


class AnswerCache:
    """Answers per (peer id, uid, token type), each kept ``ttl`` seconds of the given
    clock; at most ``max_entries`` (the oldest out first). ``ttl`` 0: nothing is kept."""

    def __init__(self, ttl: float, max_entries: int = CACHE_ENTRIES) -> None:
        self.ttl = timedelta(seconds=ttl)
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, str, str], tuple[datetime, Answer]] = OrderedDict()

    @staticmethod
    def key(peer_id: int, uid: str, token_type: str) -> tuple[int, str, str]:
        return peer_id, uid.upper(), token_type.upper()

    def get(self, peer_id: int, uid: str, token_type: str, now: datetime) -> Answer | None:
        k = self.key(peer_id, uid, token_type)
        entry = self._entries.get(k)
        if entry is None:
            return None
        if now >= entry[0]:
            del self._entries[k]
            return None
        return entry[1]

    def put(self, uid: str, token_type: str, answer: Answer, now: datetime) -> None:
        if not self.ttl or not answer.cacheable:
            return
        k = self.key(answer.peer_id, uid, token_type)
        self._entries.pop(k, None)
        self._entries[k] = (now + self.ttl, answer)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# ---------------------------------------------------------------------------- the shell


class BridgeView(Protocol):
    """What :class:`RealtimeAuth` needs of the bridge."""

    client: OcpiClient
    clock: Clock

    def registered_peers(self) -> list[Peer]: ...

    async def location_of_station(
        self, station_id: str
    ) -> tuple[dict[str, Any], tuple[int, ...]] | None: ...


class _TooBig(Exception):
    pass


class RealtimeAuth:
    """Asks peers to authorize a card (see the module's text)."""

    def __init__(self, bridge: BridgeView, timeout: float, cache_seconds: float) -> None:
        self.bridge = bridge
        self.timeout = timeout
        self.cache = AnswerCache(cache_seconds)
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)

    def peers(self) -> list[Peer]:
        """The peers that may be asked about a card no pushed token matches."""
        return [p for p in self.bridge.registered_peers() if askable(p)][:MAX_ASKED]

    def peer(self, peer_id: int | None, party: str) -> Peer | None:
        """The active peer that pushed a token (its ``peer_id``; for a token from before
        that was stored, the one eMSP that holds its party), or None."""
        peers = self.bridge.registered_peers()
        if peer_id is not None:
            return next((p for p in peers if p.id == peer_id), None)
        cc, _, pid = party.partition("/")
        holders = [p for p in peers if not p.is_hub and (cc, pid) in p.parties]
        return holders[0] if len(holders) == 1 else None

    async def ask(
        self,
        peers: Iterable[Peer],
        uid: str,
        station_id: str,
        token_type: str = "RFID",
        party: str | None = None,
    ) -> tuple[list[Answer], str | None]:
        """Ask ``peers`` at once; returns their answers in the order they came (a peer that
        did not answer in time: a ``failed`` answer) and the station's Location id. Stops
        at the first answer that allows the card there. ``party`` ("CC/PID"): the token's
        owner when known, addressed through a hub (OCPI-to-*); else the peer's party."""
        peers = list(peers)[:MAX_ASKED]
        place = await self.bridge.location_of_station(station_id)
        location = place[0] if place is not None else None
        location_id = location["id"] if location is not None else None
        now = self.bridge.clock.now()
        answers: list[Answer] = []
        to_ask: list[Peer] = []
        for peer in peers:
            cached = self.cache.get(peer.id, uid, token_type, now)
            if cached is None:
                to_ask.append(peer)
                continue
            answers.append(cached)
            if cached.allows_at(location_id):
                return answers, location_id
        if not to_ask:
            return answers, location_id
        tasks = {
            asyncio.create_task(
                self._ask_one(peer, uid, token_type, location, party), name="ocpi-authorize"
            ): peer
            for peer in to_ask
        }
        pending = set(tasks)
        try:
            async with asyncio.timeout(self.timeout):
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        answer = _result(task, tasks[task])
                        answers.append(answer)
                        self._note(tasks[task], uid, token_type, answer)
                        if answer.allows_at(location_id):
                            return answers, location_id
        except TimeoutError:
            pass
        finally:
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in pending:
            answer = Answer(tasks[task].id, "failed", error=f"no answer in {self.timeout:g} s")
            answers.append(answer)
            self._note(tasks[task], uid, token_type, answer)
        return answers, location_id

    def _note(self, peer: Peer, uid: str, token_type: str, answer: Answer) -> None:
        """Cache an answer; log a failure once, with the peer."""
        self.cache.put(uid, token_type, answer, self.bridge.clock.now())
        if answer.kind == "failed":
            log.warning(
                "real-time authorization: no usable answer",
                peer=peer.name,
                peer_id=peer.id,
                uid=uid,
                error=answer.error,
            )
        else:
            log.info(
                "real-time authorization",
                peer=peer.name,
                peer_id=peer.id,
                uid=uid,
                allowed=answer.allowed if answer.kind == "answer" else answer.kind,
            )

    async def _ask_one(
        self,
        peer: Peer,
        uid: str,
        token_type: str,
        location: dict[str, Any] | None,
        party: str | None,
    ) -> Answer:
        base = tokens_url(peer)
        if base is None:  # (askable checked it; the peer may have changed since)
            return Answer(peer.id, "failed", error="no tokens Sender endpoint")
        version = peer.version
        body = location_references(
            location, version, lambda lid: not peer.policy.sees_location(lid)
        )
        url = join_url(base, quote(uid, safe=""), "authorize")
        client = self.bridge.client
        headers = {
            "Authorization": authorization_header(peer.token_out, peer.token_out_base64),
            **new_request_ids(),
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        cc, pid = peer.primary_party
        default_owner = f"{cc}/{pid}" if cc else None
        if party is not None and peer.is_hub:  # (a hub routes to the token's eMSP)
            cc, _, pid = party.partition("/")
        if version != "2.1.1":  # (2.1.1 has no routing headers)
            headers["OCPI-from-country-code"] = client.our_country
            headers["OCPI-from-party-id"] = client.our_party
            if cc:
                headers["OCPI-to-country-code"], headers["OCPI-to-party-id"] = cc, pid
        try:
            async with self._in_flight:
                client.check_target(url)
                session = await client._get_session()
                async with session.post(
                    url,
                    data=None if body is None else dumps(body, separators=(",", ":")),
                    headers=headers,
                    params={"type": token_type},
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                    ssl=client_context(),
                    allow_redirects=False,
                ) as resp:
                    raw = await _read_capped(resp, MAX_BODY)
                    status = resp.status
        except OcpiCallFailed as e:
            return Answer(peer.id, "failed", error=str(e)[:200])
        except _TooBig:
            return Answer(peer.id, "failed", error=f"answer larger than {MAX_BODY} bytes")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            return Answer(peer.id, "failed", error=f"{type(e).__name__}: {str(e)[:160]}")
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return parse_reply(peer.id, status, parsed, peer.owns, default_owner, uid)


def _result(task: asyncio.Task[Answer], peer: Peer) -> Answer:
    """A finished ask's answer; a failure that was not foreseen is no answer (logged with
    its trace), never the station's Authorize failing."""
    try:
        return task.result()
    except Exception as e:  # (one peer's surprise must not refuse the card at the others)
        log.exception("real-time authorization: unexpected failure", peer_id=peer.id)
        return Answer(peer.id, "failed", error=f"{type(e).__name__}")


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body, unless it is longer than ``cap`` bytes (then _TooBig, without reading
    more than ``cap`` + one chunk)."""
    if resp.content_length is not None and resp.content_length > cap:
        raise _TooBig
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > cap:
            raise _TooBig
        chunks.append(chunk)
    return b"".join(chunks)

"""The credentials handshake, in both directions (OCPI 2.2.1 section 4.3).

MOBI.E's way, where we are the Receiver: the operator creates a token A (`csms ocpi token-a`)
and sends it with our versions URL and party id to MOBI.E. MOBI.E calls our versions and
details with A and POSTs its credentials (its token B and versions URL). Before answering, we
fetch its versions and details with B; then we answer with a fresh token C. A is spent.
PUT renews (new B in, new C out), GET shows our credentials, DELETE unregisters.

A peer's powers are the operator's: a token A carries a grant (HUB, EMSP or SCSP, and the parties),
and a registration or renewal whose credentials claim more (another role, a party never
given) is refused with HTTP 403 and OCPI 2001, logged and recorded for the hub-link page.
What the peer may do (hub or not, its parties) comes from the grant, never from its
credentials.

The other way, where we are the Sender (`csms ocpi register`): we fetch the peer's versions
and details with its token A, POST our credentials with a token B we made, and keep the token
C it answers with.
"""

from __future__ import annotations

import secrets
from typing import Any

import structlog

from . import v211
from .client import OcpiCallFailed, OcpiClient
from .schemas import Credentials, dump, parse
from .store import Grant, OcpiStore, Peer, excess_claims
from .transport import (
    INVALID_PARAMETERS,
    NO_MATCHING_ENDPOINTS,
    UNABLE_TO_USE_CLIENT_API,
    UNSUPPORTED_VERSION,
    VERSIONS,
    OcpiError,
)
from .versions import credentials as credentials_for
from .versions import uses_base64

log = structlog.get_logger("ocpi.credentials")


def new_token() -> str:
    """A credentials token: 43 printable characters, 256 bits of randomness."""
    return secrets.token_urlsafe(32)


def base64_for(version: str) -> bool:
    """2.2.1 peers expect Base64-encoded tokens, 2.2 and 2.1.1 peers the raw token."""
    return uses_base64(version)


class PeerEndpoints:
    """What we learnt about a peer by calling its versions and details."""

    def __init__(self, version: str, endpoints: list[dict[str, str]]) -> None:
        self.version = version
        self.endpoints = endpoints


async def discover(
    client: OcpiClient,
    versions_url: str,
    token: str,
    version: str | None,
) -> PeerEndpoints:
    """GET the peer's versions and the details of ``version`` (or of the highest version we
    both speak). Raises OcpiError 3001/3002 as the handshake requires."""
    tried: list[str] = []
    reply = None
    # A 2.2.1 peer expects a Base64 token, a 2.2 or 2.1.1 peer the raw token: try the likely
    # one first. (The versions URL serves every version: some servers decode it there even
    # when the version asked for takes the raw token, so a refusal tries the other form.)
    encodings = [base64_for(version), not base64_for(version)] if version else [True, False]
    for use_b64 in encodings:
        try:
            reply = await client.request("GET", versions_url, token, base64_token=use_b64)
        except OcpiCallFailed as e:
            raise OcpiError(
                UNABLE_TO_USE_CLIENT_API, f"cannot reach the versions URL: {e}"
            ) from None
        tried.append(reply.describe())
        if reply.ok and isinstance(reply.data, list):
            break
    assert reply is not None
    if not reply.ok or not isinstance(reply.data, list):
        raise OcpiError(UNABLE_TO_USE_CLIENT_API, f"versions URL answered {'; '.join(tried)}")
    offered = {
        str(v.get("version")): str(v.get("url"))
        for v in reply.data
        if isinstance(v, dict) and v.get("url")
    }
    wanted = [version] if version else list(VERSIONS)
    chosen = next((v for v in wanted if v in offered), None)
    if chosen is None:
        raise OcpiError(
            UNSUPPORTED_VERSION,
            f"no common version: we speak {', '.join(wanted)}, the peer offers "
            f"{', '.join(sorted(offered)) or 'none'}",
        )
    try:
        details = await client.request(
            "GET", offered[chosen], token, base64_token=base64_for(chosen)
        )
    except OcpiCallFailed as e:
        raise OcpiError(
            UNABLE_TO_USE_CLIENT_API, f"cannot reach the version details: {e}"
        ) from None
    data = details.data
    if not details.ok or not isinstance(data, dict) or not isinstance(data.get("endpoints"), list):
        raise OcpiError(UNABLE_TO_USE_CLIENT_API, f"version details answered {details.describe()}")
    endpoints = [
        {"identifier": str(e["identifier"]), "role": str(e.get("role", "")), "url": str(e["url"])}
        for e in data["endpoints"]
        if isinstance(e, dict) and e.get("identifier") and e.get("url")
    ]
    if chosen == v211.VERSION:  # 2.1.1 endpoints have no role: the one each plays for us
        for e in endpoints:
            e["role"] = e["role"] or v211.endpoint_role(e["identifier"])
    if not any(e["identifier"] == "credentials" for e in endpoints):
        raise OcpiError(NO_MATCHING_ENDPOINTS, "the peer has no credentials endpoint")
    return PeerEndpoints(chosen, endpoints)


class CredentialsService:
    def __init__(
        self,
        store: OcpiStore,
        client: OcpiClient,
        our_credentials: Any,  # callable(token) -> dict
        on_change: Any,  # async callable() after peers changed
    ) -> None:
        self.store = store
        self.client = client
        self.our_credentials = our_credentials
        self.on_change = on_change

    # ------------------------------------------------------------------ we are the Receiver

    async def register(self, token_a: str, version: str, body: Any) -> dict[str, Any]:
        """POST: a peer registers with the token A we gave it, within that token's grant."""
        grant = await self.store.token_a_grant(token_a)
        if grant is None:
            await self._refuse(
                None,
                "registration with a token A that grants nothing (made before tokens A "
                "carried a role and parties)",
                "this token A grants no role: ask the operator for a new one",
            )
        assert grant is not None
        pinned = grant.policy.version if grant.policy else None
        if pinned is not None and version != pinned:
            # the operator chose the version for this peer
            raise OcpiError(
                UNSUPPORTED_VERSION, f"register on OCPI {pinned}: the operator set it for you"
            )
        return await self._accept(version, body, token_a=token_a, grant=grant)

    async def renew(self, peer: Peer, version: str, body: Any) -> dict[str, Any]:
        """PUT: a registered peer renews its token or endpoints (never its powers)."""
        return await self._accept(version, body, peer=peer)

    async def _refuse(self, peer: Peer | None, what: str, message: str) -> None:
        """Refuse a claim: a warning in the log, a row for the hub-link page, HTTP 403 with
        OCPI 2001 for the peer (the request is well-formed; what it claims is not allowed)."""
        log.warning("OCPI credentials refused", peer_id=peer.id if peer else None, reason=what)
        await self.store.security_event(
            "claim_refused", what, peer_id=peer.id if peer is not None else None
        )
        raise OcpiError(INVALID_PARAMETERS, message, http_status=403)

    async def _accept(
        self,
        version: str,
        body: Any,
        *,
        token_a: str | None = None,
        grant: Grant | None = None,
        peer: Peer | None = None,
    ) -> dict[str, Any]:
        """Take a peer's credentials: check that they claim nothing beyond its grant, call
        its versions and details with its token B, then store them with a fresh token C,
        which we answer with (atomically, so the old C works until then)."""
        if version == v211.VERSION:  # one party, no role: the operator's grant gives it
            role = grant.role if grant is not None else (peer.grant_role if peer else None)
            body = v211.credentials_in(body, role or "EMSP")
        creds: Credentials = parse(Credentials, body)
        roles = [dump(r) for r in creds.roles]
        allowed = grant.allowed if grant is not None else (peer.allowed if peer else set())
        excess = excess_claims(roles, allowed)
        if excess:
            granted = sorted(f"{role} {cc}/{pid}" for cc, pid, role in allowed)
            await self._refuse(
                peer,
                ("registration" if peer is None else "renewal")
                + f" claims {', '.join(excess)}; granted: {', '.join(granted) or 'nothing'}",
                f"not granted to you: {', '.join(excess)} (granted: "
                f"{', '.join(granted) or 'nothing'}); the operator decides roles and parties",
            )
        found = await discover(self.client, creds.url, creds.token, version)
        token_c = new_token()
        fields = {
            "token_in": token_c,
            "token_out": creds.token,
            "token_out_base64": base64_for(found.version),
            "versions_url": creds.url,
            "version": found.version,
            "endpoints": found.endpoints,
            "roles": roles,
        }
        try:
            if peer is None:
                assert grant is not None
                peer_id = await self.store.register_peer(
                    token_a=token_a,
                    initiated_by="peer",
                    grant=grant,
                    grant_source="token_a",
                    **fields,
                )
            else:
                peer_id = peer.id
                await self.store.update_peer(peer_id, **fields)
        except ValueError as e:
            status = 405 if peer is None else 200
            raise OcpiError(2000, f"refused: {e}", http_status=status) from None
        log.info(
            "peer registered" if peer is None else "peer credentials renewed",
            peer_id=peer_id,
            roles=[f"{r['role']} {r['country_code']}/{r['party_id']}" for r in roles],
            granted=grant.describe() if grant is not None else None,
            version=found.version,
            endpoints=[e["identifier"] for e in found.endpoints],
        )
        await self.on_change()
        return credentials_for(self.our_credentials(token_c), version)

    async def unregister(self, peer: Peer) -> None:
        await self.store.unregister_peer(peer.id)
        log.info("peer unregistered", peer_id=peer.id)
        await self.on_change()

    # ------------------------------------------------------------------ we are the Sender

    async def register_with(self, versions_url: str, token_a: str, grant: Grant) -> Peer:
        """Run the handshake against a peer that gave us ``token_a``; it gets the powers of
        ``grant`` (the operator's), and its answer may claim nothing beyond them."""
        pinned = grant.policy.version if grant.policy else None  # the operator's choice
        found = await discover(self.client, versions_url, token_a, pinned)
        token_b = new_token()
        # the peer will call our versions and details with B before it answers: accept B now
        peer_id = await self.store.register_peer(
            token_a=None,
            token_in=token_b,
            token_out=token_a,
            token_out_base64=base64_for(found.version),
            versions_url=versions_url,
            version=found.version,
            endpoints=found.endpoints,
            roles=[],
            initiated_by="us",
            grant=grant,
            grant_source="operator",
        )
        await self.on_change()
        url = next(e["url"] for e in found.endpoints if e["identifier"] == "credentials")
        try:
            reply = await self.client.request(
                "POST",
                url,
                token_a,
                base64_token=base64_for(found.version),
                body=credentials_for(self.our_credentials(token_b), found.version),
            )
            if not reply.ok:
                raise OcpiError(
                    UNABLE_TO_USE_CLIENT_API,
                    f"the peer refused our credentials: {reply.describe()}",
                )
            data = reply.data
            if found.version == v211.VERSION:
                data = v211.credentials_in(data, grant.role)
            theirs: Credentials = parse(Credentials, data)
            excess = excess_claims([dump(r) for r in theirs.roles], grant.allowed)
            if excess:
                what = f"the peer's credentials claim {', '.join(excess)}; granted: " + (
                    grant.describe()
                )
                log.warning("OCPI credentials refused", peer_id=peer_id, reason=what)
                await self.store.security_event("claim_refused", what, peer_id=peer_id)
                raise OcpiError(INVALID_PARAMETERS, what)
            await self.store.update_peer(
                peer_id,
                token_in=token_b,
                token_out=theirs.token,
                token_out_base64=base64_for(found.version),
                versions_url=theirs.url,
                version=found.version,
                endpoints=found.endpoints,
                roles=[dump(r) for r in theirs.roles],
            )
        except (OcpiError, OcpiCallFailed, ValueError):
            await self.store.unregister_peer(peer_id)
            await self.on_change()
            raise
        await self.on_change()
        peer = next(p for p in await self.store.peers() if p.id == peer_id)
        log.info("registered with peer", peer_id=peer_id, version=found.version, url=versions_url)
        return peer

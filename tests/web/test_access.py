"""Who reads the dashboard's data: a token with ``metrics:read`` outside development, anyone (with
host names, pids and ids hidden) on a public dashboard."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from core.auth import TokenCodec
from core.bus import Bus
from core.keys import AUTHENTICATOR
from core.testing import assert_problem, wait_for
from tests.web.conftest import (
    Client,
    bearer,
    envelope,
    issue,
    operator,
    order_placed,
    snapshot_data,
)
from web import Settings

ClientFactory = Callable[..., Awaitable[Client]]
DATA_ROUTES = ("/dashboard/api/state", "/dashboard/stream")


def _foreign_codec() -> TokenCodec:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return TokenCodec(public_key=public.decode(), private_key=private)


def test_the_data_is_public_by_default_in_development_only() -> None:
    def settings(**values: Any) -> Settings:
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    assert settings(env="development").dashboard_is_public
    assert not settings(env="test").dashboard_is_public
    assert not settings(env="test", dashboard_public=None).dashboard_is_public
    assert settings(env="test", dashboard_public=True).dashboard_is_public
    assert not settings(env="development", dashboard_public=False).dashboard_is_public
    with pytest.raises(ValueError, match="reserved"):
        settings(dashboard_streams_total=5, dashboard_streams_reserved=5)
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        settings(dashboard_trusted_proxies=["not-a-network"])


@pytest.mark.parametrize("path", DATA_ROUTES)
async def test_outside_development_the_data_needs_a_valid_token(
    make_client: ClientFactory, path: str
) -> None:
    client = await make_client()
    refused: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        bearer(issue(expires_in=-60)),
        bearer(issue(codec=_foreign_codec())),
        bearer(issue().token + "x"),
    ]
    for headers in refused:
        response = await client.get(path, headers=headers)
        await assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # A token in the query string is never read (URLs are logged).
    token = issue().token
    await assert_problem(await client.get(path, params={"access_token": token}), 401)
    await assert_problem(await client.get(path, params={"token": token}), 401)


@pytest.mark.parametrize("path", DATA_ROUTES)
async def test_a_token_without_metrics_read_is_forbidden(
    make_client: ClientFactory, path: str
) -> None:
    client = await make_client()
    for permissions in ((), ("orders:read_all", "users:read")):
        response = await client.get(path, headers=bearer(issue(permissions)))
        body = await assert_problem(response, 403)
        assert "metrics:read" in body["detail"]
    response = await client.get(path, headers=operator())
    assert response.status == 200
    response.close()


async def test_a_revoked_token_is_refused(make_client: ClientFactory) -> None:
    client = await make_client()
    token = issue()
    assert (await client.get("/dashboard/api/state", headers=bearer(token))).status == 200
    revocations = client.app[AUTHENTICATOR].revocations
    assert revocations is not None
    await revocations.revoke_token(token.jti)
    await assert_problem(await client.get("/dashboard/api/state", headers=bearer(token)), 401)


async def test_the_page_is_public_but_carries_no_data_and_a_login_form(
    make_client: ClientFactory, publisher: Bus
) -> None:
    client = await make_client()
    marker = f"secret-{uuid.uuid4().hex[:8]}"
    order_id = str(uuid.uuid4())
    await publisher.publish_envelope(
        envelope("metrics.snapshot", snapshot_data(service="users", instance=f"{marker}:1"))
    )
    await publisher.publish_envelope(envelope("order.placed", order_placed(order_id, 4321, "EUR")))

    async def seen() -> bool:
        response = await client.get("/dashboard/api/state", headers=operator())
        view = (await response.json())["view"]
        return bool(view["sagas"]) and any(s["service"] == "users" for s in view["services"])

    await wait_for(seen, within=5)
    response = await client.get("/dashboard")
    assert response.status == 200
    html = await response.text()
    assert 'data-auth="required"' in html
    assert 'id="login-form"' in html
    assert 'type="email"' in html
    assert 'type="password"' in html
    assert 'autocomplete="current-password"' in html
    for secret in (marker, order_id[:8], "43.21", "users"):
        assert secret not in html, secret
    for path in ("/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css"):
        assert (await client.get(path)).status == 200


async def test_a_public_dashboard_hides_hosts_pids_and_ids_from_anonymous_callers(
    make_client: ClientFactory, publisher: Bus
) -> None:
    client = await make_client(dashboard_public=True)
    host, instance = f"host-{uuid.uuid4().hex[:8]}", f"inst-{uuid.uuid4().hex[:8]}"
    order_id, correlation = str(uuid.uuid4()), f"corr-{uuid.uuid4().hex[:8]}"
    data = snapshot_data(service="orders", instance=f"{instance}:987654321", host=host)
    # Nine digits: a short pid such as 4242 turned up in a timestamp's microseconds once.
    data["process"] = {**data["process"], "pid": 987654321}
    await publisher.publish_envelope(envelope("metrics.snapshot", data))
    await publisher.publish_envelope(
        envelope(
            "order.placed",
            order_placed(order_id, 1234),
            correlation_id=correlation,
        )
    )

    async def full_view() -> dict[str, Any] | None:
        response = await client.get("/dashboard/api/state?history=1", headers=operator())
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body if body["view"]["sagas"] and body["history"] else None

    full = await wait_for(full_view, within=5)
    full_text = str(full)
    for secret in (host, instance, "987654321", order_id, correlation):
        assert secret in full_text, secret  # metrics:read sees everything

    anonymous = await client.get("/dashboard/api/state?history=1")
    assert anonymous.status == 200
    public_text = (await anonymous.read()).decode()
    stream = await client.get("/dashboard/stream")
    assert stream.status == 200
    first = await stream.content.readuntil(b"\n\n")  # retry:
    first = await stream.content.readuntil(b"\n\n")  # the state event
    stream.close()
    page = await (await client.get("/dashboard")).text()
    for text in (public_text, first.decode(), page):
        assert "orders" in text
        assert "12.34" in text or '"total_cents":1234' in text
        for secret in (host, instance, "987654321", order_id, order_id[:8], correlation):
            assert secret not in text, secret
    body = (await (await client.get("/dashboard/api/state")).json())["view"]
    (saga,) = body["sagas"]
    assert saga["order_id"].startswith("o-")
    assert saga["correlation_id"] is None
    (service,) = [s for s in body["services"] if s["service"] == "orders"]
    (item,) = service["instances"]
    assert (item["host"], item["pid"]) == (None, None)
    assert item["key"] == f"orders/{item['instance']}"
    # The pseudonym is stable: charts and rows keep matching from one update to the next.
    again = (await (await client.get("/dashboard/api/state")).json())["view"]
    assert [i["key"] for s in again["services"] for i in s["instances"]] == [
        i["key"] for s in body["services"] for i in s["instances"]
    ]
    # A token, when sent, must be valid even on a public dashboard.
    bad = await client.get("/dashboard/api/state", headers={"Authorization": "Bearer nope"})
    await assert_problem(bad, 401)
    # A valid token without metrics:read gets the public view.
    customer = await client.get("/dashboard/api/state", headers=bearer(issue(())))
    assert host not in (await customer.read()).decode()

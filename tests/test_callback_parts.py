"""The callback parts on their own: signatures against the ``standardwebhooks`` library and the
README's plain-Python verifier, the URL policy (metadata in every spelling, allowed networks,
DNS rebinding), the retry schedule, the settings; and the deliverer over a real store with a
resolver that changes its answer."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from gateway.callbacks import signing
from gateway.callbacks.deliverer import Deliverer
from gateway.callbacks.retry import RetryPolicy
from gateway.callbacks.urls import CallbackUrlPolicy, CallbackUrlRefused, IPAddress, parse_legacy_ipv4
from gateway.ids import id_floor, new_id
from gateway.settings import Settings, SettingsError, load_settings
from gateway.store.callbacks import MessageQuery, WebhookAttempt, WebhookMessage
from gateway.store.sqlite import SQLiteStore
from gateway.tenancy import create_tenant
from gateway.times import parse_retry_after
from gateway.webhooks.secrets import new_secret
from tests.callback_receiver import Receiver
from tests.helpers import wait_until

README = Path(__file__).resolve().parent.parent / "README.md"
DEFAULT_NETWORKS = Settings().callback_allowed_networks

# -- signatures --------------------------------------------------------------------------------


def test_signatures_verify_with_the_standardwebhooks_library() -> None:
    secret = new_secret()
    body = b'{"type":"job.completed"}'
    headers = signing.signed_headers([secret], "msg_1", int(time.time()), body)
    assert Webhook(secret).verify(body, headers) == {"type": "job.completed"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_rotation_sends_one_signature_per_secret() -> None:
    old, new = new_secret(), new_secret()
    body = b"{}"
    headers = signing.signed_headers([new, old], "msg_2", int(time.time()), body)
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers)


def test_the_tenants_default_secret_is_a_standard_webhooks_secret(tmp_path: Path) -> None:
    async def new_tenant_secret() -> str:
        store = SQLiteStore(str(tmp_path / "secret.db"))
        await store.open()
        try:
            await store.migrate()
            return (await store.write(create_tenant("t", {}, time.time()))).webhook_secret
        finally:
            await store.close()

    secret = asyncio.run(new_tenant_secret())
    headers = signing.signed_headers([secret], "msg_3", int(time.time()), b"{}")
    Webhook(secret).verify(b"{}", headers)


def _readme_verifier() -> Any:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    [code] = [b for b in blocks if "def verify(secret: str" in b]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 (our own README's example, tested as written)
    return namespace["verify"]


def test_the_readme_plain_python_verifier_works() -> None:
    verify = _readme_verifier()
    secret, other = new_secret(), new_secret()
    body = b'{"type":"job.failed"}'
    now = int(time.time())
    assert verify(secret, signing.signed_headers([secret], "msg_4", now, body), body)
    assert verify(secret, signing.signed_headers([other, secret], "msg_4", now, body), body)
    assert not verify(other, signing.signed_headers([secret], "msg_4", now, body), body)
    assert not verify(secret, signing.signed_headers([secret], "msg_4", now - 3600, body), body)
    assert not verify(secret, signing.signed_headers([secret], "msg_4", now, body), body + b"x")


# -- callback URLs -----------------------------------------------------------------------------

METADATA_SPELLINGS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/",
    "http://0251.0376.0251.0376/",
    "http://0xa9fea9fe/",
    "http://0xA9.0xFE.0xA9.0xFE/",
    "http://169.254.43518/",
    "http://169.16689662/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::]/",
    "https://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./",
]


@pytest.mark.parametrize("url", METADATA_SPELLINGS)
async def test_metadata_is_refused_in_every_spelling_whatever_the_networks(url: str) -> None:
    for networks in (DEFAULT_NETWORKS, ["0.0.0.0/0", "::/0"]):
        with pytest.raises(CallbackUrlRefused, match="metadata"):
            await CallbackUrlPolicy(networks).check(url)


async def test_a_host_name_resolving_to_metadata_is_refused() -> None:
    async def resolver(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("169.254.169.254")]

    policy = CallbackUrlPolicy(["0.0.0.0/0"], resolver=resolver)
    with pytest.raises(CallbackUrlRefused, match=re.escape("resolves to 169.254.169.254")):
        await policy.check("https://hooks.internal/x")


@pytest.mark.parametrize(("url", "allowed"), [
    ("http://127.0.0.1:9000/hook", True),
    ("http://10.1.2.3/hook", True),
    ("http://192.168.0.9/hook", True),
    ("https://[::1]/hook", True),
    ("http://2130706433/", True),  # 127.0.0.1
    ("http://169.254.10.10/", False),  # link-local
    ("http://[fe80::1]/", False),
    ("http://[::ffff:169.254.1.1]/", False),
])
async def test_default_networks_allow_everything_but_link_local(url: str, allowed: bool) -> None:
    policy = CallbackUrlPolicy(DEFAULT_NETWORKS)
    if allowed:
        assert (await policy.check(url)).addresses
    else:
        with pytest.raises(CallbackUrlRefused, match="outside GATEWAY_CALLBACK_ALLOWED_NETWORKS"):
            await policy.check(url)


async def test_narrowed_networks_refuse_the_rest() -> None:
    policy = CallbackUrlPolicy(["10.20.0.0/16"])
    assert (await policy.check("http://10.20.3.4/")).addresses
    for url in ("http://10.21.0.1/", "http://127.0.0.1/", "http://[::ffff:10.21.0.1]/", "http://[::1]/"):
        with pytest.raises(CallbackUrlRefused, match="outside"):
            await policy.check(url)
    assert (await CallbackUrlPolicy(["10.20.0.0/16"]).check("http://[::ffff:10.20.0.1]/")).addresses


@pytest.mark.parametrize("url", [
    "ftp://example.com/", "file:///etc/passwd", "http:///nohost", "javascript:alert(1)",
    "http://exa mple.com/", "http://host:99999/", "https://" + "a" * 2100 + ".com/",
])
async def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(CallbackUrlRefused):
        await CallbackUrlPolicy(DEFAULT_NETWORKS).check(url)


def test_legacy_ipv4_forms() -> None:
    assert parse_legacy_ipv4("2852039166") == ipaddress.ip_address("169.254.169.254")
    assert parse_legacy_ipv4("0x7f.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_legacy_ipv4("10.0.513") == ipaddress.ip_address("10.0.2.1")
    for not_ip in ("example.com", "1.2.3.4.5", "256.1.1.1", "09.1.1.1", "4294967296", "1..2"):
        assert parse_legacy_ipv4(not_ip) is None


async def test_a_job_or_endpoint_with_a_refused_url_is_a_422(tmp_path: Path) -> None:
    from tests.conftest import in_process_gateway

    async with in_process_gateway(tmp_path, callback_allowed_networks=["10.0.0.0/8"]) as gateway:
        tenant = await gateway.new_tenant()
        for url in ("http://169.254.169.254/", "http://[::ffff:169.254.169.254]/",
                    "http://2852039166/", "http://127.0.0.1:8000/hook", "ftp://10.0.0.1/"):
            job = await tenant.client.post(
                "/v1/jobs", json={"model": "flux-kontext-pro", "prompt": "x", "callback_url": url}
            )
            assert job.status_code == 422, url
            assert [d["field"] for d in job.json()["error"]["details"]] == ["callback_url"]
            endpoint = await tenant.client.post("/v1/webhook-endpoints", json={"url": url})
            assert endpoint.status_code == 422, url
            assert [d["field"] for d in endpoint.json()["error"]["details"]] == ["url"]
        good = await tenant.client.post("/v1/webhook-endpoints", json={"url": "http://10.1.1.1/h"})
        assert good.status_code == 201
        patched = await tenant.client.patch(
            f"/v1/webhook-endpoints/{good.json()['id']}", json={"url": "http://0xa9fea9fe/"}
        )
        assert patched.status_code == 422
        bad_filter = await tenant.client.post(
            "/v1/webhook-endpoints", json={"url": "http://10.1.1.1/h", "event_types": ["job.done"]}
        )
        assert bad_filter.status_code == 422
        assert bad_filter.json()["error"]["details"][0]["field"] == "event_types.0"


# -- retries and settings ----------------------------------------------------------------------


def test_retry_schedule_then_dead() -> None:
    policy = RetryPolicy([0, 5, 300], jitter=0)
    assert [policy.next_delay(n) for n in range(4)] == [0.0, 5.0, 300.0, None]
    assert policy.next_delay(1, retry_after=60) == 60  # Retry-After is honoured
    assert policy.next_delay(2, retry_after=60) == 300  # but never shortens the schedule
    jittered = RetryPolicy([0, 100], jitter=0.1)
    delays = {jittered.next_delay(1) for _ in range(50)}
    assert all(90 <= d <= 110 for d in delays if d is not None) and len(delays) > 1


def test_retry_after_forms() -> None:
    now = time.time()
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30)), now) == (
        pytest.approx(30, abs=1.5)
    )
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after(" 1.5 ", now) == 1.5 and parse_retry_after("-3", now) == 0
    assert parse_retry_after("inf", now) is None and parse_retry_after("nan", now) is None


def test_callback_settings_defaults_and_validation() -> None:
    networks = [ipaddress.ip_network(n) for n in DEFAULT_NETWORKS]
    inside = lambda a: any(ipaddress.ip_address(a) in n for n in networks)  # noqa: E731
    assert all(inside(a) for a in ("10.0.0.1", "172.16.0.1", "192.168.1.1", "127.0.0.1", "8.8.8.8", "::1"))
    assert not any(inside(a) for a in ("169.254.0.1", "169.254.169.254", "fe80::1"))
    settings = Settings()
    assert settings.callback_retry_schedule == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    assert settings.callback_timeout_seconds == 15
    with pytest.raises(SettingsError, match="GATEWAY_CALLBACK_ALLOWED_NETWORKS"):
        load_settings(callback_allowed_networks=["10.0.0.0/33"])
    with pytest.raises(SettingsError, match="GATEWAY_CALLBACK_RETRY_SCHEDULE"):
        load_settings(callback_retry_schedule=[0, -5])


def test_callback_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CALLBACK_ALLOWED_NETWORKS", '["10.20.0.0/16"]')
    monkeypatch.setenv("GATEWAY_CALLBACK_RETRY_SCHEDULE", "[0, 1, 2]")
    settings = load_settings()
    assert settings.callback_allowed_networks == ["10.20.0.0/16"]
    assert settings.callback_retry_schedule == [0, 1, 2]


# -- the deliverer over a real store -------------------------------------------------------------


async def test_deliverer_checks_each_attempt_and_connects_to_the_checked_address(
    tmp_path: Path,
) -> None:
    """A name that resolved to an allowed address when it was registered, and to the metadata
    service at delivery (DNS rebinding), is not called; while it resolves inside, the
    connection goes to the address just checked, with the URL's own Host header."""
    answers = {"hooks.test": [ipaddress.ip_address("127.0.0.1")]}

    async def resolver(host: str, port: int) -> list[IPAddress]:
        return list(answers[host])

    store = SQLiteStore(str(tmp_path / "gateway.db"), readers=1)
    await store.open()
    receiver = await Receiver().start()
    results: list[str] = []
    deliverer = Deliverer(
        store, CallbackUrlPolicy(DEFAULT_NETWORKS, resolver=resolver), RetryPolicy([0], jitter=0),
        timeout=2, poll_seconds=0.05, on_result=lambda result, lag: results.append(result),
    )
    runner = asyncio.create_task(deliverer.run())
    try:
        await store.migrate()
        tenant = await store.write(create_tenant("rebind", {}, time.time()))
        receiver.secrets = [tenant.webhook_secret]
        port = receiver.url.rsplit(":", 1)[1]

        async def enqueue() -> str:
            now = time.time()
            message = WebhookMessage(
                id=new_id("msg"), tenant_id=tenant.id, endpoint_id=None,
                url=f"http://hooks.test:{port}/cb", target="t", job_id="job_x",
                event_type="job.completed", payload='{"type":"job.completed"}', event_at=now,
                created_at=now, next_attempt_at=now,
            )
            await store.write(lambda tx: tx.insert_webhook_message(message))
            deliverer.wake()
            return message.id

        first = await enqueue()
        [delivery] = await receiver.wait_for(1)
        assert delivery.webhook_id == first
        assert delivery.headers["host"] == f"hooks.test:{port}"
        receiver.assert_all_verified()

        answers["hooks.test"] = [ipaddress.ip_address("169.254.169.254")]
        second = await enqueue()

        async def dead() -> bool:
            message = await store.get_webhook_message(second)
            return message is not None and message.status == "dead"

        await wait_until(dead, 5, what="the rebinding message to be given up")
        attempts = (await store.webhook_attempts([second]))[second]
        assert len(attempts) == 1 and attempts[0].status_code is None
        assert attempts[0].error is not None and "metadata" in attempts[0].error
        assert len(receiver.deliveries) == 1
        assert results == ["delivered", "failed_attempt", "dead_lettered"]
    finally:
        await deliverer.stop(1)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await receiver.stop()
        await store.close()


async def test_old_delivered_and_dead_messages_are_pruned_pending_ones_kept(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "gateway.db"), readers=1)
    await store.open()
    try:
        await store.migrate()
        now = time.time()
        old = now - 40 * 86400

        def message(suffix: str, at: float, status: str) -> WebhookMessage:
            return WebhookMessage(
                id=id_floor("msg", at)[:-1] + suffix, tenant_id="ten_x", endpoint_id=None,
                url="http://10.0.0.1/", target="t", job_id="job_x", event_type="job.completed",
                payload="{}", event_at=at, created_at=at, status=status,
                next_attempt_at=at if status == "pending" else None,
            )

        rows = [message("1", old, "delivered"), message("2", old, "dead"),
                message("3", old, "pending"), message("4", now, "delivered")]

        def insert(tx: Any) -> None:
            for row in rows:
                tx.insert_webhook_message(row)
                tx.insert_webhook_attempt(WebhookAttempt(row.id, 1, row.created_at, 5, 500, None, None))

        await store.write(insert)
        deliverer = Deliverer(store, CallbackUrlPolicy(DEFAULT_NETWORKS), RetryPolicy([0]))
        assert await deliverer.prune(now - 30 * 86400) == 2
        kept = [m.id for m in await store.list_webhook_messages(MessageQuery(limit=10))]
        assert sorted(kept) == sorted([rows[2].id, rows[3].id])
        attempts = await store.webhook_attempts([r.id for r in rows])
        assert [len(attempts[r.id]) for r in rows] == [0, 0, 1, 1]
    finally:
        await store.close()


async def test_two_processes_never_send_the_same_attempt(tmp_path: Path) -> None:
    """Two deliverers on one database (two stores: what two gateway processes share) each
    claim in the store: every message is sent once."""
    path = str(tmp_path / "gateway.db")
    stores = [SQLiteStore(path, readers=1), SQLiteStore(path, readers=1)]
    for store in stores:
        await store.open()
    await stores[0].migrate()
    receiver = await Receiver().start()
    deliverers = [
        Deliverer(store, CallbackUrlPolicy(DEFAULT_NETWORKS), RetryPolicy([0]), timeout=2,
                  poll_seconds=0.02, per_endpoint=8)
        for store in stores
    ]
    runners = [asyncio.create_task(d.run()) for d in deliverers]
    try:
        tenant = await stores[0].write(create_tenant("twins", {}, time.time()))
        receiver.secrets = [tenant.webhook_secret]
        now = time.time()
        ids = [new_id("msg") for _ in range(20)]

        def insert(tx: Any) -> None:
            for message_id in ids:
                tx.insert_webhook_message(WebhookMessage(
                    id=message_id, tenant_id=tenant.id, endpoint_id=None,
                    url=f"{receiver.url}/cb", target="t", job_id="job_x",
                    event_type="job.completed", payload="{}", event_at=now, created_at=now,
                    next_attempt_at=now,
                ))

        await stores[1].write(insert)
        for d in deliverers:
            d.wake()
        await receiver.wait_for(20)
        await asyncio.sleep(0.3)
        assert sorted(d.webhook_id for d in receiver.deliveries) == sorted(ids)
        receiver.assert_all_verified()
    finally:
        for d in deliverers:
            await d.stop(1)
        await asyncio.gather(*runners, return_exceptions=True)
        await receiver.stop()
        for store in stores:
            await store.close()

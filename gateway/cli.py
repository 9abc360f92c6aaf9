"""The ``gateway`` command: dev, serve, simulator, migrate, tenants, keys.

Scripts rely on the output: ``tenants create`` prints the new tenant's id as its last line,
``keys create`` the new key's secret.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.admin import AdminService
from gateway.api.admin import audit_view, key_view, tenant_view
from gateway.api.common import iso
from gateway.callbacks.service import redeliver_dead, redeliver_message
from gateway.errors import GatewayError
from gateway.settings import Settings, SettingsError, load_settings
from gateway.store import ApiKey
from gateway.store.sqlite import SQLiteStore
from gateway.tenancy import IssuedKey, create_tenant, issue_key
from gateway.times import parse_time
from gateway.usage import parse_range, usage_report

T = TypeVar("T")
DEMO_TENANT = "demo"


async def _with_store(settings: Settings, action: Callable[[SQLiteStore], Awaitable[T]]) -> T:
    store = SQLiteStore(settings.database_path, readers=1)
    await store.open()
    try:
        await store.migrate()
        return await action(store)
    finally:
        await store.close()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    async def main() -> list[int]:
        store = SQLiteStore(settings.database_path, readers=1)
        await store.open()
        try:
            return await store.migrate()
        finally:
            await store.close()

    applied = asyncio.run(main())
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    return 0


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _admin(settings: Settings, action: Callable[[AdminService], Awaitable[T]]) -> T:
    return asyncio.run(_with_store(settings, lambda store: action(AdminService(store))))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _limits_arg(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise SystemExit(f"error: --limits is not JSON: {text!r}") from None


def cmd_tenants_create(settings: Settings, args: argparse.Namespace) -> int:
    limits = _limits_arg(args.limits)
    tenant = _admin(settings, lambda admin: admin.create_tenant(_actor(), args.name, limits))
    print(f"created tenant {tenant.name}")
    print(tenant.id)
    return 0


def cmd_tenants_list(settings: Settings, args: argparse.Namespace) -> int:
    tenants = _admin(settings, lambda admin: admin.store.list_tenants())
    _print_json([tenant_view(t) for t in tenants])
    return 0


def cmd_tenants_show(settings: Settings, args: argparse.Namespace) -> int:
    _print_json(tenant_view(_admin(settings, lambda admin: admin.get_tenant(args.tenant))))
    return 0


def cmd_tenants_update(settings: Settings, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.limits is not None:
        body["limits"] = _limits_arg(args.limits)
    if args.name is not None:
        body["name"] = args.name
    if args.disabled is not None:
        body["disabled"] = args.disabled
    tenant = _admin(settings, lambda admin: admin.update_tenant(_actor(), args.tenant, body))
    _print_json(tenant_view(tenant))
    return 0


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    body = {"name": args.name, "expires_at": args.expires_at}
    issued: IssuedKey = _admin(settings, lambda admin: admin.create_key(_actor(), args.tenant, body))
    print(f"created key {issued.key.id} ({issued.key.prefix}...) for tenant {issued.key.tenant_id}")
    print("the secret is shown only this once:")
    print(issued.secret)
    return 0


def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> int:
    async def action(admin: AdminService) -> list[ApiKey]:
        tenant = await admin.get_tenant(args.tenant)
        return await admin.store.list_keys(tenant.id)

    now = time.time()
    _print_json([key_view(k, now) for k in _admin(settings, action)])
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    key = _admin(settings, lambda admin: admin.revoke_key(_actor(), args.key_id))
    _print_json(key_view(key, time.time()))
    return 0


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    body = {"overlap_seconds": args.overlap_seconds}
    issued, old = _admin(settings, lambda admin: admin.rotate_key(_actor(), args.key_id, body))
    print(f"created key {issued.key.id} ({issued.key.prefix}...); "
          f"{old.id} keeps working until {iso(old.expires_at)}")
    print("the secret is shown only this once:")
    print(issued.secret)
    return 0


def cmd_usage(settings: Settings, args: argparse.Namespace) -> int:
    async def action(admin: AdminService) -> dict[str, Any]:
        tenant = await admin.get_tenant(args.tenant)
        now = time.time()
        first, last = parse_range(args.from_day, args.to_day, now)
        return await usage_report(admin.store, tenant, first, last, now)

    _print_json(_admin(settings, action))
    return 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    entries = _admin(settings, lambda admin: admin.store.list_audit(
        limit=args.limit, before_id=None, target_id=args.target
    ))
    _print_json([audit_view(e) for e in entries])
    return 0


async def _demo_key(settings: Settings) -> str:
    async def action(store: SQLiteStore) -> str:
        if await store.get_tenant(DEMO_TENANT) is None:
            await store.write(create_tenant(DEMO_TENANT, {}, time.time()))
        issued = await store.write(issue_key(DEMO_TENANT, "dev", None, time.time()))
        return issued.secret

    return await _with_store(settings, action)


def cmd_callbacks_redeliver(settings: Settings, args: argparse.Namespace) -> int:
    message = asyncio.run(_with_store(
        settings, lambda s: s.write(redeliver_message(args.message_id, None, time.time(), _actor()))
    ))
    print(f"redelivering {message.id} ({message.event_type} of job {message.job_id})")
    return 0


def cmd_callbacks_redeliver_dead(settings: Settings, args: argparse.Namespace) -> int:
    since = parse_time(args.since, "--since")
    assert since is not None  # argparse makes --since required
    count = asyncio.run(_with_store(settings, lambda s: s.write(
        redeliver_dead(args.tenant, args.endpoint, since, time.time(), _actor())
    )))
    print(f"redelivering {count} dead-lettered callbacks (a running gateway sends them)")
    print(count)
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace, *, dev: bool = False) -> int:
    from gateway.runner import serve

    if dev:
        if not settings.uses_simulator:  # dev is the embedded default: never real WaveSpeed
            print("gateway dev ignores GATEWAY_WAVESPEED_API_KEY and runs the built-in "
                  "simulator; `gateway serve` calls WaveSpeed", file=sys.stderr)
        settings = settings.model_copy(update={"log_format": "console", "wavespeed_api_key": None})

    async def main() -> None:
        key = await _demo_key(settings) if dev else None

        def ready(effective: Settings, simulator_url: str | None) -> None:
            base = effective.public_url
            if simulator_url:
                print(f"WaveSpeed simulator (built in) on {simulator_url}", file=sys.stderr)
            print(f"Kontext Gateway on {base}", file=sys.stderr)
            if key:
                body = '{"model": "flux-kontext-pro", "prompt": "a red fox in fresh snow", "wait": 30}'
                print(f"Demo tenant key: {key}")
                print("Try:")
                print(
                    f"  curl -s {base}/v1/jobs -H 'Authorization: Bearer {key}' "
                    f"-H 'Content-Type: application/json' -d '{body}'"
                )
            sys.stdout.flush()

        await serve(settings, simulator_latency=args.simulator_latency, on_ready=ready)

    asyncio.run(main())
    return 0


def cmd_simulator(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.simulator import SimulatorConfig, create_simulator_app

    public = args.public_url or f"http://{args.host}:{args.port}"
    config = SimulatorConfig(public_url=public, latency_seconds=args.latency)
    print(f"WaveSpeed simulator on {public}; key {config.api_key}", file=sys.stderr)
    uvicorn.run(create_simulator_app(config), host=args.host, port=args.port, log_level="warning")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="SQLite + the built-in simulator + a demo tenant key")
    dev.add_argument("--simulator-latency", type=float, default=1.0,
                     help="seconds the simulator takes per job (default 1)")
    dev.set_defaults(func=lambda s, a: cmd_serve(s, a, dev=True))

    serve = sub.add_parser("serve", help="run the gateway (GATEWAY_* settings)")
    serve.add_argument("--simulator-latency", type=float, default=1.0,
                       help="when no WaveSpeed key is set: simulator seconds per job")
    serve.set_defaults(func=cmd_serve)

    sim = sub.add_parser("simulator", help="run the WaveSpeed simulator alone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8001)
    sim.add_argument("--public-url", default=None)
    sim.add_argument("--latency", type=float, default=1.0)
    sim.set_defaults(func=cmd_simulator)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=cmd_migrate)

    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(dest="verb", required=True)
    create = tenants.add_parser("create", help="create a tenant; prints its id last")
    create.add_argument("name")
    create.add_argument("--limits", help='JSON, e.g. \'{"images_per_day": 100}\'')
    create.set_defaults(func=cmd_tenants_create)

    tlist = tenants.add_parser("list", help="list tenants (JSON)")
    tlist.set_defaults(func=cmd_tenants_list)
    tshow = tenants.add_parser("show", help="one tenant (JSON)")
    tshow.add_argument("tenant", help="tenant id or name")
    tshow.set_defaults(func=cmd_tenants_show)
    tupdate = tenants.add_parser("update", help="change name or limits (null removes a limit)")
    tupdate.add_argument("tenant", help="tenant id or name")
    tupdate.add_argument("--limits", help='JSON, e.g. \'{"usd_per_day": "25.00", "images_per_day": null}\'')
    tupdate.add_argument("--name")
    tupdate.set_defaults(func=cmd_tenants_update, disabled=None)
    for verb, value in (("disable", True), ("enable", False)):
        toggle = tenants.add_parser(verb, help=f"{verb} a tenant (its keys stop or start working at once)")
        toggle.add_argument("tenant", help="tenant id or name")
        toggle.set_defaults(func=cmd_tenants_update, disabled=value, limits=None, name=None)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="verb", required=True)
    kcreate = keys.add_parser("create", help="issue a key; prints the secret last")
    kcreate.add_argument("tenant", help="tenant id or name")
    kcreate.add_argument("--name")
    kcreate.add_argument("--expires-at", help="ISO 8601 time")
    kcreate.set_defaults(func=cmd_keys_create)
    klist = keys.add_parser("list", help="a tenant's keys (JSON; prefixes only)")
    klist.add_argument("tenant", help="tenant id or name")
    klist.set_defaults(func=cmd_keys_list)
    krevoke = keys.add_parser("revoke", help="revoke a key, effective at once")
    krevoke.add_argument("key_id")
    krevoke.set_defaults(func=cmd_keys_revoke)
    krotate = keys.add_parser("rotate", help="issue a replacement; prints the new secret last")
    krotate.add_argument("key_id")
    krotate.add_argument("--overlap-seconds", type=float, default=24 * 3600,
                         help="how long the old key keeps working (default 24 h)")
    krotate.set_defaults(func=cmd_keys_rotate)

    usage = sub.add_parser("usage", help="a tenant's usage (JSON)")
    usage.add_argument("tenant", help="tenant id or name")
    usage.add_argument("--from", dest="from_day", help="UTC date YYYY-MM-DD (default today)")
    usage.add_argument("--to", dest="to_day", help="UTC date YYYY-MM-DD (default: --from)")
    usage.set_defaults(func=cmd_usage)

    audit = sub.add_parser("audit", help="the admin audit log, newest first (JSON)")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--target", help="only entries about this tenant or key id")
    audit.set_defaults(func=cmd_audit)

    callbacks = sub.add_parser("callbacks", help="tenant callbacks").add_subparsers(
        dest="verb", required=True
    )
    credeliver = callbacks.add_parser("redeliver", help="send one callback message again")
    credeliver.add_argument("message_id")
    credeliver.set_defaults(func=cmd_callbacks_redeliver)
    cdead = callbacks.add_parser(
        "redeliver-dead", help="send a tenant's dead letters again; prints how many last"
    )
    cdead.add_argument("--tenant", required=True, help="tenant id or name")
    cdead.add_argument("--since", required=True, help="ISO 8601: dead-lettered at or after")
    cdead.add_argument("--endpoint", help="only this webhook endpoint's")
    cdead.set_defaults(func=cmd_callbacks_redeliver_dead)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        result: int = args.func(settings, args)
        return result
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for detail in exc.details:
            print(f"  {detail.get('field')}: {detail.get('message')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``aos security ...``: Kafka users and ACLs, card signing keys, the keyring, redaction.

No command prints a password or a private key: passwords go to files under the stack's home
(``<home>/secrets/kafka/<user>.password``, 0600) and keys to the files named on the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aos_gateway.errors import AosError, ConfigError
from aos_gateway.settings import Settings

Progress = Callable[[str], None]


def add_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    sp = sub.add_parser("security", help="Kafka users and ACLs, signed agent cards, encryption keys, PII redaction")
    ssub = sp.add_subparsers(dest="security_cmd", required=True, parser_class=parser_class)

    def principals(p: argparse.ArgumentParser) -> None:
        p.add_argument("--agent", action="append", default=[], metavar="ID", help="an agent principal (repeatable)")
        p.add_argument("--tenant", action="append", default=[], metavar="T", help="a tenant principal (repeatable)")
        p.add_argument("--no-services", action="store_true", help="leave out the worker and ingress principals")

    for name, what in (
        ("users", "create or update the SCRAM users (passwords generated into <home>/secrets/kafka/, 0600)"),
        ("acls", "create the ACLs of the principals"),
    ):
        p = ssub.add_parser(name, help=what)
        p.add_argument("action", choices=["apply", "show"] if name == "acls" else ["apply"])
        principals(p)
        if name == "users":
            p.add_argument("--env", action="store_true", help="print each principal's AOS_KAFKA__* environment")
        else:
            p.add_argument("--broker", action="store_true", help="show: the ACLs the broker holds, not the plan")
        p.set_defaults(handler=lambda a: run(a))

    p = ssub.add_parser("apply", help="users apply + acls apply")
    principals(p)
    p.add_argument("--env", action="store_true", help="print each principal's AOS_KAFKA__* environment")
    p.set_defaults(handler=lambda a: run(a))
    p = ssub.add_parser("revoke", help="delete every ACL of the named principals (their users stay)")
    principals(p)
    p.set_defaults(handler=lambda a: run(a), no_services=True)

    kp = ssub.add_parser("keys", help="the per-tenant keyring that encrypts stored experience")
    kp.add_argument("action", choices=["new", "status", "rotate", "retire"])
    kp.add_argument("--tenant", default="*", help="new: whose key ('*': the master that derives every tenant's)")
    kp.add_argument("--file", type=Path, default=None, help="new: the keyring file (default: AOS_SECURITY__KEYRING)")
    kp.set_defaults(handler=lambda a: run(a))

    cp = ssub.add_parser("cards", help="sign agent cards (Ed25519) and manage the trust file")
    cp.add_argument("action", choices=["keygen", "sign"])
    cp.add_argument("file", nargs="?", type=Path, help="sign: agent cards (JSON lines) to sign")
    cp.add_argument("--key", type=Path, default=None, help="the private key (keygen: written, sign: read)")
    cp.add_argument("--agent", default=None, help="keygen: the agent the key belongs to")
    cp.add_argument("--tenant", default=None, help="keygen: the tenant the key belongs to (signs its agents)")
    cp.add_argument("--trust", type=Path, default=None, help="keygen: add the public key to this trust file")
    cp.add_argument("--as-tenant", action="store_true", help="sign: as the cards' tenant, not as each agent")
    cp.set_defaults(handler=lambda a: run(a))

    rp = ssub.add_parser("redact", help="print text with PII replaced (the argument, or stdin)")
    rp.add_argument("text", nargs="?", default=None)
    rp.set_defaults(handler=lambda a: run(a))


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr)


def run(args: argparse.Namespace, settings: Settings | None = None, progress: Progress = _progress) -> int:
    from aos_gateway.settings import get_settings

    s = settings or get_settings()
    cmd = args.security_cmd
    if cmd in ("users", "acls", "apply", "revoke"):
        return _kafka(cmd, args, s, progress)
    if cmd == "keys":
        return _keys(args, s, progress)
    if cmd == "cards":
        return _cards(args, s, progress)
    text = args.text if args.text is not None else sys.stdin.read()
    from aos_gateway.security.redact import Redactor

    sys.stdout.write(Redactor(s.security.redact_kinds)(text) + ("" if text.endswith("\n") else "\n"))
    return 0


# -- Kafka users and ACLs ------------------------------------------------------------------------


def _principals(args: argparse.Namespace) -> list[Any]:
    from aos_gateway.security import acls

    out = [] if args.no_services else [acls.worker(), acls.ingress()]
    out += [acls.agent(a) for a in args.agent]
    out += [acls.tenant(t) for t in args.tenant]
    if not out:
        raise ConfigError("no principals: name --agent or --tenant, or drop --no-services")
    return out


def _kafka(cmd: str, args: argparse.Namespace, s: Settings, progress: Progress) -> int:
    from aos_gateway.security import acls
    from aos_gateway.security.clients import admin_kafka, client_env
    from aos_gateway.security.passwords import SecretsDir

    principals = _principals(args)
    grants = acls.matrix(principals, s.worker.app_id)
    if cmd == "acls" and args.action == "show" and not args.broker:
        for g in grants:
            print(g.describe())
        return 0
    from aos_gateway.streams.kafka import admin

    client = admin(admin_kafka(s))
    if cmd == "acls" and args.action == "show":
        for g in acls.current_grants(client, s.kafka.request_timeout_s * 3):
            print(g.describe())
        return 0
    if cmd == "revoke":
        for p in principals:
            n = acls.revoke(client, p, s.kafka.request_timeout_s * 3)
            progress(f"security: {n} ACLs of {p.kafka_principal} deleted")
        return 0
    home = s.stack.home.expanduser().resolve()
    secrets_dir = SecretsDir(home)
    if cmd in ("users", "apply"):
        files = {p.user: secrets_dir.ensure(p.user) for p in principals}
        users = acls.upsert_users(client, {u: secrets_dir.read(u) for u in files}, s.kafka.request_timeout_s * 3)
        for u in users:
            progress(f"security: SCRAM user {u} (password in {files[u]})")
        if args.env:
            for p in principals:
                env = client_env(s.kafka, p.user, files[p.user])
                print(f"# {p.kind} {p.agent_id or p.tenant or ''}".rstrip())
                print(" ".join(f"{k}={v}" for k, v in env.items()))
    if cmd in ("acls", "apply"):
        n = acls.apply_grants(client, grants, s.kafka.request_timeout_s * 3)
        progress(f"security: {n} ACLs for {len(principals)} principals")
    return 0


# -- the keyring ---------------------------------------------------------------------------------


def _keyring_path(args: argparse.Namespace, s: Settings) -> Path:
    if args.file is not None:
        return Path(args.file)
    if s.security.keyring is None:
        raise ConfigError("no keyring file: pass --file PATH (then set AOS_SECURITY__KEYRING=PATH)")
    text = s.security.keyring.get_secret_value().strip()
    if text.startswith("{"):
        raise ConfigError("AOS_SECURITY__KEYRING is inline JSON; keys are added to a keyring file (--file PATH)")
    return Path(text).expanduser()


def _keys(args: argparse.Namespace, s: Settings, progress: Progress) -> int:
    from aos_gateway.experience.cold import ColdStore
    from aos_gateway.security.crypto import Keyring, new_key
    from aos_gateway.security.sealing import ExperienceSealer

    if args.action == "new":
        path = _keyring_path(args, s)
        if path.exists():
            ring, kid = Keyring.load(path).with_new_key(args.tenant)
        else:
            ring = Keyring.from_json({args.tenant: [new_key()]})
            kid = ring.current_key_id(args.tenant)
        ring.save(path)
        progress(f"security: new key {kid} for {args.tenant!r} in {path} (it encrypts from the next start on)")
        return 0
    sealer = ExperienceSealer.from_settings(s)
    if sealer is None or sealer.keyring is None:
        raise ConfigError("no keyring: set AOS_SECURITY__KEYRING (a file made by `aos security keys new`)")
    cold = ColdStore(s.experience.cold_dir, sealer)
    if args.action == "rotate":
        total = 0
        for day in cold.days():
            n = cold.reseal(day)
            total += n
            progress(f"security: {day}: {n} rows re-encrypted")
        progress(f"security: {total} rows under {cold.root} now use each tenant's newest key")
        return 0
    in_use: dict[str, int] = {}
    stale = 0
    table = cold.read(opened=False)
    for k, n in sealer.key_ids(table).items():
        in_use[k] = in_use.get(k, 0) + n
    newest = {sealer.keyring.current_key_id(t) for t in set(table.column("tenant").to_pylist())}
    for k, n in sorted(in_use.items()):
        state = "plain" if k == "plain" else ("newest" if k in newest else "older key")
        stale += n if state != "newest" else 0
        if args.action == "status":
            print(f"{k:<18} {n:>9} values  {state}")
    if args.action == "status":
        return 0
    if stale:
        raise AosError(f"{stale} stored values are plain or under older keys: run `aos security keys rotate` first")
    path = _keyring_path(args, s)
    Keyring.load(path).without_old_keys().save(path)
    progress(f"security: older keys removed from {path}")
    return 0


# -- card signing --------------------------------------------------------------------------------


def _write_new_private(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; a signing key is never overwritten") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _cards(args: argparse.Namespace, s: Settings, progress: Progress) -> int:
    from aos_gateway.security import cards

    if args.action == "keygen":
        if args.key is None or (args.agent is None) == (args.tenant is None):
            raise ConfigError("keygen needs --key FILE and one of --agent ID or --tenant T")
        key = cards.new_signing_key()
        _write_new_private(args.key, cards.private_pem(key))
        pub = cards.public_b64(key)
        section, name = ("agents", args.agent) if args.agent is not None else ("tenants", args.tenant)
        if args.trust is not None:
            raw: dict[str, Any] = json.loads(args.trust.read_text(encoding="utf-8")) if args.trust.exists() else {}
            entry = raw.setdefault(section, {}).setdefault(name, [])
            if isinstance(entry, str):
                raw[section][name] = entry = [entry]
            entry.insert(0, pub)
            cards.TrustStore.from_json(raw, str(args.trust))  # still valid
            args.trust.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
            progress(f"security: public key of {section[:-1]} {name!r} added to {args.trust}")
        print(pub)
        return 0
    if args.file is None:
        raise ConfigError("sign needs a file of agent cards (JSON lines)")
    from aos_gateway.matching.cards import read_cards

    key_path = args.key or s.security.card_signing_key_file
    if key_path is None:
        raise ConfigError("sign needs --key FILE (or AOS_SECURITY__CARD_SIGNING_KEY_FILE)")
    key = cards.load_signing_key(Path(key_path))
    n = 0
    for card in read_cards(args.file):
        signer = cards.signer_for_tenant(card["tenant"]) if args.as_tenant else None
        print(json.dumps(cards.sign_card(card, key, signer), ensure_ascii=False))
        n += 1
    progress(f"security: {n} cards signed (register them with `aos agents register`; do not change their tenant)")
    return 0

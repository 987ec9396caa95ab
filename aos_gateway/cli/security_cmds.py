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

from aos_gateway.cli import argtypes
from aos_gateway.errors import AosError, ConfigError, ValidationError
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
    kp.add_argument(
        "--tenant",
        default=None,
        help="new: whose key (default '*': the master that derives every tenant's); "
        "rotate: re-encrypt only this tenant's values (default: every tenant's)",
    )
    kp.add_argument(
        "--file", type=Path, default=None, help="new, retire: the keyring file (default: AOS_SECURITY__KEYRING)"
    )
    kp.set_defaults(handler=lambda a: run(a))

    cp = ssub.add_parser("cards", help="sign agent cards (Ed25519) and manage the trust file")
    cp.add_argument("action", choices=["keygen", "sign"])
    cp.add_argument("file", nargs="?", type=argtypes.existing_file, help="sign: agent cards (JSON lines) to sign")
    cp.add_argument("--key", type=Path, default=None, help="the private key (keygen: written, sign: read)")
    cp.add_argument("--agent", default=None, help="keygen: the agent the key belongs to")
    cp.add_argument("--tenant", default=None, help="keygen: the tenant the key belongs to (signs its agents)")
    cp.add_argument(
        "--trust",
        type=Path,
        default=None,
        help="keygen: add the public key to this trust file; sign: check that it trusts the key for the cards "
        "(default: AOS_SECURITY__CARD_TRUST_FILE)",
    )
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


def _usage(message: str) -> argparse.ArgumentError:
    """A bad argument found after parsing: ``aos`` reports it as argparse does, exit status 2."""
    return argparse.ArgumentError(None, message)


def _principals(args: argparse.Namespace) -> list[Any]:
    from aos_gateway.security import acls

    for flag, names in (("--agent", args.agent), ("--tenant", args.tenant)):
        if any(not n.strip() for n in names):
            raise _usage(f"{flag} needs a non-empty name")
    out = [] if args.no_services else [acls.worker(), acls.ingress()]
    out += [acls.agent(a) for a in args.agent]
    out += [acls.tenant(t) for t in args.tenant]
    if not out:
        if args.security_cmd == "revoke":  # never the services': revoke names whom it revokes
            raise _usage("no principals: name whose ACLs to delete with --agent ID or --tenant T")
        raise _usage("no principals: name --agent or --tenant, or drop --no-services")
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


def _file_to_write(flag: str, path: Path) -> None:
    """A file a command writes: a folder or a missing folder is a bad argument (exit 2), found before any work."""
    problem = argtypes.new_file_problem(path)
    if problem:
        raise _usage(f"{flag} {path}: {problem}")


def _file_to_read(flag: str, path: Path | None) -> None:
    """A file a command reads (when given): a folder or a missing file is a bad argument (exit 2)."""
    problem = None if path is None else argtypes.file_problem(path)
    if problem:
        raise _usage(f"{flag} {path}: {problem}")


def _keyring_path(args: argparse.Namespace, s: Settings) -> Path:
    if args.file is not None:
        _file_to_write("--file", args.file)
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

    if args.tenant is not None and not args.tenant.strip():
        raise _usage("--tenant needs a non-empty tenant ('*': the master key)")
    if args.tenant is not None and args.action not in ("new", "rotate"):
        raise _usage(f"--tenant applies to keys new and keys rotate, not keys {args.action}")
    if args.file is not None and args.action in ("status", "rotate"):
        raise _usage(f"--file applies to keys new and keys retire; keys {args.action} uses AOS_SECURITY__KEYRING")
    if args.action == "new":
        tenant = args.tenant or "*"
        path = _keyring_path(args, s)
        if path.exists():
            ring, kid = Keyring.load(path).with_new_key(tenant)
        else:
            ring = Keyring.from_json({tenant: [new_key()]})
            kid = ring.current_key_id(tenant)
        try:
            ring.save(path)
        except OSError as exc:
            raise ConfigError(f"cannot write the keyring {path}: {exc.strerror}") from None
        progress(f"security: new key {kid} for {tenant!r} in {path} (it encrypts from the next start on)")
        return 0
    sealer = ExperienceSealer.from_settings(s)
    if sealer is None or sealer.keyring is None:
        raise ConfigError("no keyring: set AOS_SECURITY__KEYRING (a file made by `aos security keys new`)")
    if args.action == "rotate":
        only = None if args.tenant in (None, "*") else args.tenant
        cold = ColdStore(s.experience.cold_dir, sealer if only is None else sealer.only_tenants(frozenset({only})))
        total = 0
        for day in cold.days():
            n = cold.reseal(day)
            total += n
            progress(f"security: {day}: {n} rows rewritten" + (f" ({only!r}'s values re-encrypted)" if only else ""))
        if only is None:
            progress(f"security: {total} rows under {cold.root} now use each tenant's newest key")
        else:
            progress(f"security: the values of tenant {only!r} under {cold.root} now use its newest key")
        return 0
    cold = ColdStore(s.experience.cold_dir, sealer)
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
    except OSError as exc:
        raise ConfigError(f"cannot write the signing key {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _read_trust(path: Path) -> dict[str, Any]:
    """The trust file's JSON (empty when it does not exist yet), checked as a reader would.

    Raises:
        ConfigError: It is not JSON or not a trust file's shape (naming the file).
    """
    from aos_gateway.security import cards

    if not path.exists():
        return {}
    raw = cards.TrustStore.read_json(path)
    cards.TrustStore.from_json(raw, str(path))
    assert isinstance(raw, dict)  # from_json refuses anything else
    return raw


def _keygen(args: argparse.Namespace, progress: Progress) -> int:
    from aos_gateway.security import cards

    if args.key is None or (args.agent is None) == (args.tenant is None):
        raise _usage("keygen needs --key FILE and one of --agent ID or --tenant T")
    section, name = ("agents", args.agent) if args.agent is not None else ("tenants", args.tenant)
    if not name.strip():
        raise _usage(f"--{section[:-1]} needs a non-empty name")
    _file_to_write("--key", args.key)
    if args.key.exists():
        raise ConfigError(f"{args.key} exists; a signing key is never overwritten")
    # everything that can be refused is checked before the key is written: a retry must not find it there
    raw: dict[str, Any] = {}
    if args.trust is not None:
        _file_to_write("--trust", args.trust)
        raw = _read_trust(args.trust)
    key = cards.new_signing_key()
    pub = cards.public_b64(key)
    signer = cards.signer_for_agent(name) if section == "agents" else cards.signer_for_tenant(name)
    if args.trust is not None:
        entries = raw.setdefault(section, {})
        entry = entries.setdefault(name, [])
        if isinstance(entry, str):
            entries[name] = entry = [entry]
        entry.insert(0, pub)
        cards.TrustStore.from_json(raw, str(args.trust))  # still valid
    _write_new_private(args.key, cards.private_pem(key, signer))
    if args.trust is not None:
        tmp = args.trust.with_name(f".{args.trust.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, args.trust)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            args.key.unlink(missing_ok=True)  # not trusted: the key is of no use, and a retry must be possible
            raise ConfigError(f"cannot write the trust file {args.trust}: {exc.strerror}") from None
        progress(f"security: public key of {section[:-1]} {name!r} added to {args.trust}")
    print(pub)
    return 0


def _sign(args: argparse.Namespace, s: Settings, progress: Progress) -> int:
    from aos_gateway.matching.cards import read_card_file
    from aos_gateway.security import cards

    if args.file is None:
        raise _usage("sign needs a file of agent cards (JSON lines)")
    _file_to_read("--key", args.key)
    _file_to_read("--trust", args.trust)
    key_path = args.key or s.security.card_signing_key_file
    if key_path is None:
        raise _usage("sign needs --key FILE (or AOS_SECURITY__CARD_SIGNING_KEY_FILE)")
    key_path = Path(key_path)
    key = cards.load_signing_key(key_path)
    todo = read_card_file(args.file)  # no card at all: refused (a signed empty file helps nobody)
    made_for = cards.key_signer(key_path)
    trust_path = args.trust or s.security.card_trust_file
    trusted: list[str] | None = None
    if trust_path is not None and Path(trust_path).is_file():
        trusted = cards.TrustStore.load(Path(trust_path)).signers_of(cards.public_b64(key))
    out = []
    for card in todo:
        signer = cards.signer_for_tenant(card["tenant"]) if args.as_tenant else cards.signer_for_agent(card["agent_id"])
        whose = f"tenant {card['tenant']!r}" if args.as_tenant else f"agent {card['agent_id']!r}"
        if made_for is not None and made_for != signer:
            hint = " (a tenant's key signs with --as-tenant)" if made_for.startswith("tenant:") else ""
            raise ValidationError(
                f"{args.file}: the card of agent {card['agent_id']!r} would be signed as {signer}, but {key_path} "
                f"is the key of {made_for}: readers would reject it; sign it with {whose}'s key{hint}"
            )
        if trusted is not None and trusted and signer not in trusted:
            raise ValidationError(
                f"{args.file}: the card of agent {card['agent_id']!r} would be signed as {signer}, but {trust_path} "
                f"trusts {key_path} only for {', '.join(trusted)}: readers would reject it; sign it with {whose}'s key"
            )
        out.append(cards.sign_card(card, key, signer))
    if trusted == []:
        progress(f"security: warning: {trust_path} does not list the public key of {key_path}; readers will reject")
    for signed in out:
        print(json.dumps(signed, ensure_ascii=False))
    progress(
        f"security: {len(out)} cards signed (register them with `aos agents register`; do not change their tenant)"
    )
    return 0


def _cards(args: argparse.Namespace, s: Settings, progress: Progress) -> int:
    if args.action == "keygen":
        return _keygen(args, progress)
    return _sign(args, s, progress)

"""Generated passwords kept in files under the stack's home, one per Kafka user.

Layout: ``<home>/secrets/`` (mode 0700) and ``<home>/secrets/kafka/<user>.password`` (mode 0600,
the password on one line). A client reads its own with ``AOS_KAFKA__SASL_PASSWORD_FILE``; nothing
here ever prints or logs a password, only the file's path.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from aos_gateway.errors import ConfigError

#: a SCRAM user name we generate: no ``,`` or ``=`` (SCRAM escapes them), nothing a shell would mangle
_USER = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def check_user(user: str) -> str:
    """``user`` when it is a name we can use for a SCRAM user and a file name.

    Raises:
        ConfigError: Empty, too long, or holding other characters than letters, digits, ``.``, ``_``, ``-``.
    """
    if not _USER.match(user) or user in (".", ".."):
        raise ConfigError(f"not a usable Kafka user name: {user!r} (letters, digits, '.', '_', '-')")
    return user


def new_password() -> str:
    """A random password: 32 bytes from the OS, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


class SecretsDir:
    """The passwords of the Kafka users of one stack home."""

    def __init__(self, home: Path) -> None:
        self.root = home / "secrets"
        self.kafka = self.root / "kafka"

    def path(self, user: str) -> Path:
        """Where the password of ``user`` lives (it may not exist yet)."""
        return self.kafka / f"{check_user(user)}.password"

    def ensure(self, user: str) -> Path:
        """The password file of ``user``, created with a new password (mode 0600) when missing.

        Created with ``O_EXCL``, so two processes never write two passwords for one user.
        """
        path = self.path(user)
        if path.exists():
            return path
        for d in (self.root, self.kafka):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_password() + "\n")
        return path

    def read(self, user: str) -> str:
        """The password of ``user``.

        Raises:
            ConfigError: No password file (the message names the file, never a password).
        """
        path = self.path(user)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(f"no password for Kafka user {user!r}: {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read the password of Kafka user {user!r} ({path}): {exc.strerror}") from None
        if not text:
            raise ConfigError(f"the password file of Kafka user {user!r} is empty: {path}")
        return text.splitlines()[0]

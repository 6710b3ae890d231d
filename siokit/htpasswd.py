"""nginx basic-auth password lines, computed alike by Ansible (filter plugin) and `siokit render`.

`{SSHA}` (RFC 2307 salted SHA-1, supported by nginx's auth_basic_user_file since 1.0.3): plain
hashlib, so neither side needs passlib or the crypt module (deprecated, gone in Python 3.13), and a
salt kept with the generated password makes the file byte-stable across runs. SHA-1 is a weak
password hash, which matters little here: the kit's password is 32 random letters and digits.
"""

from __future__ import annotations

import base64
import hashlib


def ssha(password: str, salt: str) -> str:
    """The {SSHA} form of `password` with `salt` (both non-empty)."""
    if not password or not salt:
        raise ValueError("ssha needs a non-empty password and salt")
    raw_salt = salt.encode("utf-8")
    digest = hashlib.sha1(password.encode("utf-8") + raw_salt).digest()
    return "{SSHA}" + base64.b64encode(digest + raw_salt).decode("ascii")

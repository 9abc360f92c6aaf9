"""Signing secrets the gateway hands out (tenants' default secrets, endpoint secrets):
``whsec_`` + base64 of 32 random bytes, the Standard Webhooks form."""

from __future__ import annotations

import base64
import secrets

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()

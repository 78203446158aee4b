"""Names in a tenant's address: slug and org (DNS label parts), and plain words.

Kept apart from the request models so that what only needs a name (an API token's org scope, the
command line's read commands) loads no email validation and builds no request model.
"""

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

DNS_LABEL_PART = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
WORD = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
MAX_HOST_LABEL = 63

RESERVED_WORDS = frozenset(
    {
        "admin",
        "api",
        "app",
        "assets",
        "auth",
        "billing",
        "cdn",
        "console",
        "dagster",
        "dashboard",
        "edge",
        "help",
        "internal",
        "localhost",
        "login",
        "mail",
        "oauth",
        "root",
        "sso",
        "static",
        "status",
        "support",
        "system",
        "www",
    }
)


def _check_name(value: str) -> str:
    if not 3 <= len(value) <= 30:
        raise ValueError("must be 3 to 30 characters long")
    if not DNS_LABEL_PART.fullmatch(value):
        raise ValueError(
            "must be lowercase letters, digits and '-', start with a letter, end with a letter "
            "or digit"
        )
    if "--" in value:
        raise ValueError("must not contain '--'")
    if value in RESERVED_WORDS:
        raise ValueError(f"{value!r} is a reserved word")
    return value


def _check_word(value: str) -> str:
    if not WORD.fullmatch(value):
        raise ValueError("must be a lowercase word of letters, digits and '-' (at most 40)")
    return value


# The JSON schema documents the rules for clients (and fuzzers); the validators enforce them with
# messages a person can act on.
Name = Annotated[
    str,
    AfterValidator(_check_name),
    WithJsonSchema(
        {"type": "string", "minLength": 3, "maxLength": 30, "pattern": DNS_LABEL_PART.pattern}
    ),
]
Word = Annotated[str, AfterValidator(_check_word)]

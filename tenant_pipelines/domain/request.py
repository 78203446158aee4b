"""The tenant request as submitted.

Validation here is about form only (malformed input is refused before anything is recorded);
business rules (plan exists, role admits the plan, slug free) belong to the Validate phase.
"""

import re
import uuid
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    model_validator,
)

DNS_LABEL_PART = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
TOKEN = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
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


def _check_token(value: str) -> str:
    if not TOKEN.fullmatch(value):
        raise ValueError("must be a lowercase word of letters, digits and '-' (at most 40)")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
Token = Annotated[str, AfterValidator(_check_token)]


class RequestedBy(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    subject: str = Field(min_length=1, max_length=200)
    role: Token


class TenantRequest(BaseModel):
    """A new-tenant request; `request_id` is the idempotency key."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    request_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    slug: Name
    org: Name
    plan: Token
    admin_email: EmailStr
    requested_by: RequestedBy

    @model_validator(mode="after")
    def _host_label_fits(self) -> Self:
        if len(f"{self.slug}-{self.org}") > MAX_HOST_LABEL:
            raise ValueError(f"'<slug>-<org>' must be at most {MAX_HOST_LABEL} characters")
        return self

    @classmethod
    def parse(cls, data: dict[str, object]) -> "TenantRequest":
        """Build from loosely typed input (CLI, JSON): strings are coerced where unambiguous."""
        return cls.model_validate(data, strict=False)


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad field and the rule it broke."""
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "request"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {message}")
    return "invalid request: " + "; ".join(parts)

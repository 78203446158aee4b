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
    WithJsonSchema,
    model_validator,
)

from tenant_pipelines.domain.plans import PLANS, Role

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


def _check_role(value: str) -> str:
    if value not in set(Role):
        known = ", ".join(Role)
        raise ValueError(f"role {value!r} is unknown (known roles: {known})")
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


class RequestedBy(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    subject: str = Field(min_length=1, max_length=200)
    # Malformed, so refused at submission; whether the role admits the plan is Validate's call.
    role: Annotated[
        str, AfterValidator(_check_role), WithJsonSchema({"type": "string", "enum": list(Role)})
    ]


class TenantFields(BaseModel):
    """What a person asks for: the body of `POST /v1/tenants` and the console's form."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    slug: Name
    org: Name
    plan: Annotated[Word, WithJsonSchema({"type": "string", "enum": list(PLANS)})]
    admin_email: EmailStr

    @model_validator(mode="after")
    def _host_label_fits(self) -> Self:
        if len(f"{self.slug}-{self.org}") > MAX_HOST_LABEL:
            raise ValueError(f"'<slug>-<org>' must be at most {MAX_HOST_LABEL} characters")
        return self


class TenantRequest(TenantFields):
    """A new-tenant request; `request_id` is the idempotency key, `requested_by` the caller as
    the server knows it (a token's subject and role, or the operator on the control-plane host).
    """

    request_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    requested_by: RequestedBy

    @classmethod
    def parse(cls, data: dict[str, object]) -> "TenantRequest":
        """Build from loosely typed input (CLI, JSON): strings are coerced where unambiguous."""
        return cls.model_validate(data, strict=False)


def field_errors(error: ValidationError) -> list[tuple[str, str]]:
    """(field, the rule it broke) for each problem; "request" when no single field is at fault."""
    return [
        (
            ".".join(str(p) for p in item["loc"]) or "request",
            item["msg"].removeprefix("Value error, "),
        )
        for item in error.errors()
    ]


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad field and the rule it broke."""
    return "invalid request: " + "; ".join(f"{f}: {rule}" for f, rule in field_errors(error))

"""The tenant request as submitted.

Validation here is about form (malformed input is refused before anything is recorded) and the
plan, which must be one of the catalog's; business rules (role admits the plan, slug free) belong
to the Validate phase (a slug held by a live tenant is also refused when the request is recorded).
Validate checks the plan again: a request recorded before its plan left the catalog is rejected.
"""

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

from tenant_pipelines.domain.names import MAX_HOST_LABEL, RESERVED_WORDS, Name, Word
from tenant_pipelines.domain.plans import PLANS, Role

__all__ = [
    "MAX_HOST_LABEL",
    "RESERVED_WORDS",
    "Name",
    "RequestedBy",
    "TenantFields",
    "TenantRequest",
    "Word",
    "describe_validation_error",
    "field_errors",
]


def _check_plan(value: str) -> str:
    if value not in PLANS:
        raise ValueError(f"{value!r} is not a plan (known: {', '.join(PLANS)})")
    return value


# A word first (its rule is the clearer one for a malformed value), then one of the catalog's.
PlanName = Annotated[
    Word, AfterValidator(_check_plan), WithJsonSchema({"type": "string", "enum": list(PLANS)})
]


def _check_role(value: str) -> str:
    if value not in set(Role):
        known = ", ".join(Role)
        raise ValueError(f"role {value!r} is unknown (known roles: {known})")
    return value


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
    plan: PlanName
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

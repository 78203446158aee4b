"""API tokens as the control plane issues them: who they name, their role, org and lifetime.

A token is shown once, when it is created; the registry keeps only a hash of its secret part.
Its public part, the token id, names it in `tenantctl token list` and `revoke`.
"""

from datetime import datetime
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tenant_pipelines.domain.access import ORG_SCOPED_ROLES, Caller
from tenant_pipelines.domain.names import Name
from tenant_pipelines.domain.plans import Role

DEFAULT_LIFETIME_DAYS = 90
MAX_LIFETIME_DAYS = 3650
TOKEN_PREFIX = "tp_"


def _printable(value: str) -> str:
    if not value.isprintable() or value != value.strip():
        raise ValueError("must be printable, without leading or trailing spaces")
    return value


Subject = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]


class TokenGrant(BaseModel):
    """What `tenantctl token create` asks for; validated before anything is stored."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    subject: Subject
    role: Role
    org: Name | None = None
    expires_in_days: int = Field(default=DEFAULT_LIFETIME_DAYS, ge=1, le=MAX_LIFETIME_DAYS)

    @model_validator(mode="after")
    def _org_scope_fits_the_role(self) -> Self:
        if self.role in ORG_SCOPED_ROLES and self.org is None:
            raise ValueError(f"a {self.role} token needs --org: it acts for one org only")
        if self.role not in ORG_SCOPED_ROLES and self.org is not None:
            raise ValueError(f"a {self.role} token acts for every org: drop --org")
        return self

    @classmethod
    def parse(cls, data: dict[str, object]) -> "TokenGrant":
        return cls.model_validate(data, strict=False)


class TokenRecord(BaseModel):
    """A token as stored and listed: never its secret."""

    model_config = ConfigDict(frozen=True)

    token_id: str
    subject: str
    role: Role
    org: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def usable_at(self, moment: datetime) -> bool:
        return self.revoked_at is None and moment < self.expires_at

    def caller(self) -> Caller:
        return Caller(subject=self.subject, role=self.role, org=self.org, token_id=self.token_id)

    def to_json(self) -> dict[str, object]:
        return {
            "token_id": self.token_id,
            "subject": self.subject,
            "role": str(self.role),
            "org": self.org,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def split_token(token: str) -> tuple[str, str] | None:
    """`tp_<token id>_<secret>` -> (token id, secret); None for anything else."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = token.removeprefix(TOKEN_PREFIX).partition("_")
    if not sep or not token_id.isalnum() or not secret:
        return None
    return token_id, secret

"""`tenantctl token create|list|revoke`: API tokens, issued on the control-plane host.

A token is printed once, at creation; the registry keeps only its hash, so a lost token is
revoked and replaced, never recovered.
"""

import argparse
import json
from typing import TYPE_CHECKING, Any

from tenant_pipelines.domain.plans import Role

if TYPE_CHECKING:  # pydantic's models and SQLAlchemy: only when a token command runs
    from tenant_pipelines.domain.tokens import TokenRecord
    from tenant_pipelines.registry.store import TenantRegistry


class InvalidGrant(Exception):
    """The token asked for is malformed: exit status 2, nothing stored."""


def add_commands(sub: Any) -> None:
    """`token` and its three subcommands, each with --json."""
    token = sub.add_parser("token", help="API tokens for the HTTP API and the console")
    actions = token.add_subparsers(dest="token_command", required=True)

    create = actions.add_parser("create", help="issue a token (printed once)")
    create.add_argument("--subject", required=True, help="who the token is for")
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument("--org", help="the one org it acts for (org-admin and viewer)")
    create.add_argument("--expires-in-days", type=int, help="lifetime in days (default 90)")
    create.set_defaults(token_handler=create_token)

    listing = actions.add_parser("list", help="every token, never its secret")
    listing.set_defaults(token_handler=list_tokens)

    revoke = actions.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("token_id")
    revoke.set_defaults(token_handler=revoke_token)
    for parser in (create, listing, revoke):
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def create_token(args: argparse.Namespace, registry: "TenantRegistry") -> str:
    from pydantic import ValidationError

    from tenant_pipelines.domain.tokens import TokenGrant

    fields: dict[str, object] = {"subject": args.subject, "role": args.role, "org": args.org}
    if args.expires_in_days is not None:
        fields["expires_in_days"] = args.expires_in_days
    try:
        grant = TokenGrant.parse(fields)
    except ValidationError as error:
        from tenant_pipelines.domain.request import field_errors

        problems = [rule if f == "request" else f"{f}: {rule}" for f, rule in field_errors(error)]
        raise InvalidGrant("cannot create the token: " + "; ".join(problems)) from None
    token, record = registry.tokens.create(grant)
    if args.json:
        return json.dumps({**_fields(record), "token": token}, sort_keys=True)
    return (
        f"{token}\n"
        f"token {record.token_id} for {record.subject} ({_scope(record)}), "
        f"expires {record.expires_at:%Y-%m-%d}. It is shown only now: store it safely."
    )


def list_tokens(args: argparse.Namespace, registry: "TenantRegistry") -> str:
    records = registry.tokens.all()
    if args.json:
        return json.dumps([record.to_json() for record in records], sort_keys=True)
    lines = [
        f"{r.token_id}  {r.subject:<24} {_scope(r):<28} expires {r.expires_at:%Y-%m-%d}"
        + ("  REVOKED" if r.revoked_at else "")
        for r in records
    ]
    return "\n".join(lines) or "no tokens"


def revoke_token(args: argparse.Namespace, registry: "TenantRegistry") -> str:
    record = registry.tokens.revoke(args.token_id)
    if args.json:
        return json.dumps(record.to_json(), sort_keys=True)
    return f"token {record.token_id} of {record.subject} is revoked"


def _fields(record: "TokenRecord") -> dict[str, object]:
    return {
        "token_id": record.token_id,
        "subject": record.subject,
        "role": str(record.role),
        "org": record.org,
        "expires_at": record.expires_at.isoformat(),
    }


def _scope(record: "TokenRecord") -> str:
    return f"{record.role}, org {record.org}" if record.org else f"{record.role}, every org"

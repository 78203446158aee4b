"""The three welcome emails' words: subjects and templates, filled in for one tenant."""

import html
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from string import Template

from tenant_pipelines.domain.mail import INVITATION_LIFETIME, EmailKind, OutgoingEmail
from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.tenant import TenantSpec

SUBJECTS = {
    EmailKind.WELCOME: "Welcome aboard: $slug of $org is live",
    EmailKind.CONSOLE: "Your admin console for $tenant_key",
    EmailKind.ONBOARDING: "Next steps for $tenant_key",
}


def ledger_kind(kind: str) -> str:
    """The email's entry in the tenant's resource ledger."""
    return f"email:{kind}"


def render_email(
    kind: str,
    tenant: TenantSpec,
    served_at: str,
    invitation_token: str,
    from_email: str,
    invitation_expires_at: datetime | None = None,
) -> OutgoingEmail:
    """Fill the kind's text and HTML templates; every value is HTML-escaped in the HTML part.

    The invitation code travels in the body only, never in a link: the console's sign-in asks
    the admin to paste it (edges and proxies log URLs)."""
    if kind not in SUBJECTS:
        known = ", ".join(EmailKind)
        raise ValueError(f"unknown email kind {kind!r} (known: {known})")
    values = _template_values(tenant, served_at, invitation_token, invitation_expires_at)
    escaped = {name: html.escape(value, quote=True) for name, value in values.items()}
    subject = Template(SUBJECTS[EmailKind(kind)]).substitute(values)
    subject = " ".join(subject.split())  # no line breaks can reach a header
    body = _template(f"{kind}.html").substitute(escaped)
    page = _template("layout.html").substitute(
        escaped, title=html.escape(subject, quote=True), content=body
    )
    return OutgoingEmail(
        kind=str(kind),
        tenant_key=tenant.key,
        tenant_slug=tenant.slug,
        to=tenant.admin_email,
        from_email=from_email,
        subject=subject,
        text=_template(f"{kind}.txt").substitute(values),
        html=page,
        idempotency_key=f"{tenant.request_id}:{ledger_kind(kind)}",
        tenant_id=tenant.tenant_id,
    )


def _template_values(
    tenant: TenantSpec, served_at: str, invitation_token: str, expires_at: datetime | None
) -> dict[str, str]:
    tenant_url = tenant.url(served_at)
    days = INVITATION_LIFETIME.days
    expiry = f"{days} days after it was made"
    if expires_at is not None:
        expiry = f"{expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return {
        "slug": tenant.slug,
        "org": tenant.org,
        "plan": tenant.plan,
        "tenant_key": tenant.key,
        "admin_email": tenant.admin_email,
        "tenant_url": tenant_url,
        "console_url": f"{tenant_url}/admin",
        "invitation_token": invitation_token,
        "invitation_expires": expiry,
        "plan_limits": _plan_limits(tenant.plan),
    }


def _plan_limits(plan_name: str) -> str:
    plan = PLANS.get(plan_name)
    if plan is None:
        return "The console shows how many users your plan admits."
    return (
        f"Your {plan.name} plan includes up to {plan.identity_max_users:,} users and "
        f"{plan.storage_quota_mb:,} MB of storage."
    )


@cache
def _template(name: str) -> Template:
    return Template(files(__package__ or "").joinpath("templates", name).read_text("utf-8"))

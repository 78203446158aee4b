"""What a caller is told about a tenant: `tenantctl status --json`, `GET /v1/tenants/{slug}`."""

from pydantic import BaseModel, ConfigDict

from tenant_pipelines.domain.states import StatusState
from tenant_pipelines.domain.timeline import TimelineEntry


class TenantStatus(BaseModel):
    """A tenant, or a request that has no tenant yet (its state then reads `request-<state>`)."""

    model_config = ConfigDict(frozen=True)

    slug: str
    org: str
    plan: str
    state: StatusState
    url: str
    last_run_id: str | None
    failed_step: str | None
    failure_reason: str | None
    tenant_id: str | None
    request_id: str
    admin_email: str
    created_at: str
    updated_at: str


class TenantDetail(TenantStatus):
    """The status and the tenant's provisioning timeline, oldest entry first."""

    timeline: list[TimelineEntry]

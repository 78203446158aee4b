"""Which backends the platform runs on, chosen in one place from the settings."""

from dagster import EnvVar

from resources.deployer import LocalProcessDeployer
from resources.faults import with_faults
from resources.identity import LocalSQLiteIdentityStore
from resources.mailer import Mailer, OutboxMailer, SendGridMailer
from resources.platform import TenantPlatform
from resources.registry import RegistryResource
from resources.storage import LocalSQLiteStorage
from resources.traffic import LocalEdgeRoutes
from tenant_pipelines.settings import Settings


def build_mailer(settings: Settings) -> Mailer:
    if settings.sendgrid_configured:
        return SendGridMailer(
            api_key=EnvVar("SENDGRID_API_KEY"),
            from_email=EnvVar("SENDGRID_FROM"),
            api_host=settings.sendgrid_api_host,
        )
    return OutboxMailer(data_dir=str(settings.data_dir))


def build_local_platform(settings: Settings) -> TenantPlatform:
    """The embedded default: every backend real and on this machine."""
    data_dir = str(settings.data_dir)
    return TenantPlatform(
        domain=settings.domain,
        registry=RegistryResource(db_url=settings.db_url),
        storage=LocalSQLiteStorage(data_dir=data_dir),
        identity=LocalSQLiteIdentityStore(data_dir=data_dir),
        traffic=LocalEdgeRoutes(data_dir=data_dir, domain=settings.domain),
        deployer=LocalProcessDeployer(data_dir=data_dir, domain=settings.domain),
        mailer=build_mailer(settings),
    )


def build_platform(settings: Settings) -> TenantPlatform:
    platform = build_local_platform(settings)
    if settings.fault_plan is not None:
        return with_faults(platform, str(settings.fault_plan))
    return platform

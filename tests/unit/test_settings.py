"""Settings from the environment: run limits per plan, storage selection, clear refusals."""

from dataclasses import replace

import pytest

from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.settings import Settings

pytestmark = pytest.mark.unit

SEVERAL_HOSTS = {
    "TENANT_WORKER_HOSTS": "h-a, h-b",
    "DAGSTER_PG_URL": "postgresql://platform@db/dagster",
    "TENANT_DB_URL": "postgresql://platform@db/registry",
    "TENANT_CELERY_BROKER": "redis://:s3cret@broker:6379/0",
}


def test_defaults_are_the_embedded_platform_with_the_catalogs_run_limits() -> None:
    settings = Settings.from_env({})
    assert settings.dagster_pg_url is None
    assert settings.backends == "local" and settings.backends_pg_url is None
    assert settings.max_concurrent_runs == 8
    assert dict(settings.plan_concurrency) == {"free": 3, "team": 4}  # enterprise: global only


def test_plan_limits_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "TENANT_MAX_CONCURRENT_RUNS": "20",
            "TENANT_FREE_CONCURRENCY": "1",
            "TENANT_ENTERPRISE_CONCURRENCY": "6",
        }
    )
    assert settings.max_concurrent_runs == 20
    assert dict(settings.plan_concurrency) == {"free": 1, "team": 4, "enterprise": 6}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TENANT_FREE_CONCURRENCY": "two"}, "TENANT_FREE_CONCURRENCY must be a whole number"),
        ({"TENANT_TEAM_CONCURRENCY": "0"}, "TENANT_TEAM_CONCURRENCY must be at least 1"),
        ({"TENANT_MAX_CONCURRENT_RUNS": "-1"}, "TENANT_MAX_CONCURRENT_RUNS must be at least 1"),
        # free 3 + team 4 would fill all 7 slots: an enterprise run could wait behind them forever.
        ({"TENANT_MAX_CONCURRENT_RUNS": "7"}, "leave no run slot for enterprise"),
        ({"DAGSTER_PG_URL": "postgres://u@h/db"}, "DAGSTER_PG_URL must start with postgresql://"),
        ({"TENANT_HTTPS_PORT": "https"}, "TENANT_HTTPS_PORT must be a whole number"),
        ({"TENANT_EDGE_PLAIN_HTTP": "allow"}, "TENANT_EDGE_PLAIN_HTTP must be redirect or serve"),
        ({"TENANT_EDGE_CLIENT_TIMEOUT_S": "0"}, "TENANT_EDGE_CLIENT_TIMEOUT_S must be at least 1"),
        ({"TENANT_HOST_NAME": " h-a"}, "TENANT_HOST_NAME must be 1 to 255 printable characters"),
        ({"TENANT_HOST_NAME": "h\na"}, "TENANT_HOST_NAME must be 1 to 255 printable characters"),
        ({**SEVERAL_HOSTS, "TENANT_WORKER_HOSTS": "h-a,h b"}, "'h b' is not a worker host's name"),
        ({**SEVERAL_HOSTS, "TENANT_WORKER_HOSTS": "h-a,h-a=h:1"}, "names the host 'h-a' twice"),
        ({**SEVERAL_HOSTS, "TENANT_WORKER_HOSTS": "h-a=10.0.0.2"}, "the ingress of 'h-a' must be"),
        ({**SEVERAL_HOSTS, "TENANT_WORKER_HOSTS": "h-a=h/x:80"}, "the ingress of 'h-a' must be"),
        ({**SEVERAL_HOSTS, "TENANT_WORKER_HOSTS": "h-a=h:65536"}, "the ingress of 'h-a' must be"),
        ({**SEVERAL_HOSTS, "TENANT_DB_URL": ""}, "needs TENANT_DB_URL on PostgreSQL"),
        ({**SEVERAL_HOSTS, "DAGSTER_PG_URL": ""}, "TENANT_WORKER_HOSTS needs DAGSTER_PG_URL"),
        ({**SEVERAL_HOSTS, "TENANT_CELERY_BROKER": ""}, "needs TENANT_CELERY_BROKER"),
        (
            {**SEVERAL_HOSTS, "TENANT_CELERY_BROKER": "amqp://guest:s3cret@mq//"},
            "TENANT_CELERY_BROKER must start with redis://, rediss://, not amqp://$",
        ),
    ],
)
def test_impossible_settings_are_refused_with_the_variable_named(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_every_plan_limited_needs_no_free_slot() -> None:
    env = {
        "TENANT_MAX_CONCURRENT_RUNS": "4",
        "TENANT_FREE_CONCURRENCY": "2",
        "TENANT_TEAM_CONCURRENCY": "2",
        "TENANT_ENTERPRISE_CONCURRENCY": "2",
    }
    assert dict(Settings.from_env(env).plan_concurrency) == {"free": 2, "team": 2, "enterprise": 2}


def test_child_env_spells_out_every_setting_and_passes_urls_on() -> None:
    env = {
        "DAGSTER_PG_URL": "postgresql://u@h/dagster",
        "TENANT_BACKENDS": "postgres",
        "TENANT_BACKENDS_PG_URL": "postgresql://u@h/tenants",
        "TENANT_FREE_CONCURRENCY": "1",
    }
    child = Settings.from_env(env).child_env(base={})
    assert child["DAGSTER_PG_URL"] == "postgresql://u@h/dagster"
    assert child["TENANT_BACKENDS_PG_URL"] == "postgresql://u@h/tenants"
    assert child["TENANT_BACKENDS"] == "postgres"
    assert child["TENANT_FREE_CONCURRENCY"] == "1"
    assert child["TENANT_ENTERPRISE_CONCURRENCY"] == ""  # no plan limit, as in the parent
    parent, again = Settings.from_env(env), Settings.from_env(child)
    # The child is given the deployment the parent derived, spelled out: the same name.
    assert (again.deployment_set, again.deployment) == (parent.deployment, parent.deployment)
    assert replace(again, deployment_set="") == parent


def test_tenants_addresses_name_the_edges_https_port_unless_it_is_443() -> None:
    local = Settings.from_env({})
    assert (local.https_port, local.edge_plain_http, local.edge_client_timeout_s) == (
        8443,
        "redirect",
        60,
    )
    assert local.served_at == "localhost:8443"
    production = Settings.from_env({"TENANT_DOMAIN": "example.com", "TENANT_HTTPS_PORT": "443"})
    assert production.served_at == "example.com"
    child = Settings.from_env(production.child_env(base={}))
    assert (child.served_at, child.edge_plain_http) == ("example.com", "redirect")


def test_the_host_is_local_unless_named_and_children_get_the_same_name() -> None:
    """Not the machine's host name: a container gets a new one at every start, which would leave
    every tenant placed on a host that no longer exists."""
    assert Settings.from_env({}).host_name == "local"
    named = Settings.from_env({"TENANT_HOST_NAME": "worker-1"})
    assert named.host_name == "worker-1"
    assert Settings.from_env(named.child_env(base={})).host_name == "worker-1"


def test_tenants_are_placed_on_the_worker_hosts_when_there_are_several() -> None:
    assert Settings.from_env({}).placement_hosts == ("local",)
    control = Settings.from_env(SEVERAL_HOSTS)
    assert (control.worker_hosts, control.placement_hosts) == (("h-a", "h-b"), ("h-a", "h-b"))
    assert "s3cret" not in repr(control)
    worker = Settings.from_env({**control.child_env(base={}), "TENANT_HOST_NAME": "h-b"})
    assert (worker.host_name, worker.worker_hosts) == ("h-b", ("h-a", "h-b"))
    assert worker.celery_broker == control.celery_broker


def test_each_worker_hosts_ingress_is_its_address_or_its_name_on_the_default_port() -> None:
    settings = Settings.from_env(
        {**SEVERAL_HOSTS, "TENANT_WORKER_HOSTS": "h-a=10.0.0.2:9001, h-b, h-c=[fd00::3]:80"}
    )
    assert dict(settings.worker_ingresses) == {
        "h-a": "10.0.0.2:9001",
        "h-b": "h-b:8480",
        "h-c": "[fd00::3]:80",
    }
    assert settings.worker_hosts == ("h-a", "h-b", "h-c")
    again = Settings.from_env(settings.child_env(base={}))
    assert again.worker_ingresses == settings.worker_ingresses


def test_the_ingress_secret_is_derived_from_the_broker_and_never_shown() -> None:
    settings = Settings.from_env(SEVERAL_HOSTS)
    other_broker = {**SEVERAL_HOSTS, "TENANT_CELERY_BROKER": "redis://:other@broker:6379/0"}
    secret = settings.ingress_secret
    assert len(secret) == 64 and secret == Settings.from_env(SEVERAL_HOSTS).ingress_secret
    assert secret != Settings.from_env(other_broker).ingress_secret
    assert secret not in repr(settings) and secret not in settings.child_env(base={}).values()
    assert Settings.from_env({}).ingress_secret == ""

"""`smartport stack up | down | status`: the local services, installed, started and reused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from deploy import install, process
from deploy.services import HOST, Mosquitto, Service, all_services
from deploy.topics import ensure_topics
from smartport.errors import ConfigError, StackError
from smartport.mqtt import ROLE_USERS
from smartport.settings import Settings


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    endpoint: str
    healthy: bool
    pid: int | None
    log: Path


def _launch(service: Service) -> str | None:
    """Spawn ``service`` unless a healthy one already answers on its port; None when spawned,
    else what was found."""
    if service.healthy():
        pid = process.read_pid(service.pid_path)
        return f"reused (pid {pid})" if pid else "reused (started outside smartport)"
    if process.port_open(HOST, service.port):
        raise StackError(
            f"port {service.port} is taken by a process that is not a healthy {service.name}: "
            f"stop it (`ss -ltnp 'sport = :{service.port}'` shows which) and run again"
        )
    process.stop(service.pid_path)  # a stale process of ours that lost its port
    process.spawn(service.prepare(), service.log_path, service.pid_path, cwd=service.home)
    return None


def up(settings: Settings, console: Console | None = None) -> list[ServiceStatus]:
    """Install what is missing, start what is not running, create the topics. Idempotent.

    Every service is spawned before any is waited for: a cluster's Kafka nodes only become
    healthy together, once a majority of their controllers is up.
    """
    console = console or Console(stderr=True)
    services = all_services(settings.state_dir, settings.kafka, settings.mqtt_anonymous)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with console.status("checking Debian packages (first run: apt-get update + install) ..."):
        added = install.ensure_apt()
    if added:
        console.print(f"[green]✓[/] installed Debian packages: {', '.join(added)}")
    for service in services:
        with console.status(f"installing {service.name} (first run downloads it) ..."):
            service.install()
    found = {service.name: _launch(service) for service in services}
    for service in services:
        outcome = found[service.name]
        if outcome is None:
            with console.status(f"starting {service.name} on {service.endpoint} ..."):
                process.wait_until(service.healthy, timeout=service.start_timeout,
                                   service=service.name, log_path=service.log_path,
                                   pid_path=service.pid_path)
            outcome = f"started (pid {process.read_pid(service.pid_path)})"
        if process.read_pid(service.pid_path) is not None:
            service.provision()  # ours: its users and such are kept in this state directory
        console.print(f"[green]✓[/] {service.name:<10} {service.endpoint:<16} {outcome}")
    with console.status("creating Kafka topics ..."):
        created = ensure_topics(settings.kafka)
    console.print(f"[green]✓[/] topics     {'created ' + ', '.join(created) if created else 'ok'}")
    return status(settings)


def down(settings: Settings) -> list[str]:
    """Stop the services this state directory started; returns their names."""
    services = all_services(settings.state_dir, settings.kafka, settings.mqtt_anonymous)
    return [s.name for s in reversed(services) if process.stop(s.pid_path, timeout=30.0)]


def status(settings: Settings) -> list[ServiceStatus]:
    return [
        ServiceStatus(s.name, s.endpoint, s.healthy(), process.read_pid(s.pid_path), s.log_path)
        for s in all_services(settings.state_dir, settings.kafka, settings.mqtt_anonymous)
    ]


def add_mqtt_user(settings: Settings, username: str, password: str, *, port: str | None,
                  kind: str | None) -> None:
    """A role user (gateway, streams, officer), a device bound to its port and kind, or a
    port's edge gateway (kind ``edge``)."""
    broker = Mosquitto(settings.state_dir)
    if username in ROLE_USERS:
        broker.add_user(username, password)
    elif port is None or kind is None:
        raise ConfigError(f"{username!r} is a device (not one of the roles "
                          f"{', '.join(ROLE_USERS)}): give its --port and --kind, which bind "
                          "the one topic it may publish to")
    else:
        broker.add_device(username, password, port=port, kind=kind)

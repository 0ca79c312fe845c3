"""`btcflow broker setup|start|stop|status`: the embedded single-node KRaft broker."""

from __future__ import annotations

import typer

from pipeline.broker import EmbeddedBroker, admin_client, setup_jars
from pipeline.settings import PipelineSettings

broker_app = typer.Typer(
    help="The embedded Apache Kafka broker (KRaft, one node) on 127.0.0.1.", no_args_is_help=True
)


def embedded_broker(settings: PipelineSettings) -> EmbeddedBroker:
    return EmbeddedBroker(
        settings.broker_home, settings.kafka_jars, settings.broker_port, settings.broker_heap
    )


def _external(settings: PipelineSettings) -> str:
    return (
        f"BTCFLOW_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: btcflow uses that cluster and manages no broker"
    )


@broker_app.command("setup")
def setup() -> None:
    """Resolve the Kafka jars with Maven into the cache (once; again only when the pom changes)."""
    settings = PipelineSettings()
    libs = setup_jars(settings.kafka_jars)
    typer.echo(f"Kafka jars ready in {libs}")


@broker_app.command("start")
def start(
    timeout: float = typer.Option(90.0, help="Seconds to wait for the broker to answer."),
) -> None:
    """Start the broker (idempotent) and print its bootstrap address once it answers.

    With BTCFLOW_KAFKA_BOOTSTRAP set, starts nothing and prints that address.
    """
    settings = PipelineSettings()
    if not settings.embedded:
        typer.echo(_external(settings), err=True)
        typer.echo(settings.bootstrap)
        return
    typer.echo(EmbeddedBroker.from_settings(settings).start(timeout))


@broker_app.command("stop")
def stop() -> None:
    """Stop the broker cleanly (SIGTERM, SIGKILL after 30 s)."""
    settings = PipelineSettings()
    if not settings.embedded:
        typer.echo(_external(settings))
        return
    stopped = EmbeddedBroker.from_settings(settings).stop()
    typer.echo("broker stopped" if stopped else "broker was not running")


@broker_app.command("status")
def status() -> None:
    """Say whether the broker runs, where, and where its files are; exit 3 when it does not answer."""
    settings = PipelineSettings()
    if not settings.embedded:
        admin_client(settings.bootstrap).close()  # BrokerUnavailable (exit 3) when it does not answer
        typer.echo(f"external cluster at {settings.bootstrap}: answering")
        return
    state = EmbeddedBroker.from_settings(settings).status()
    typer.echo(state.describe())
    if not state.running:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    app.add_typer(broker_app, name="broker")

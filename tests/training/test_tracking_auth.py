"""MLflow's authentication on the tracking server btcflow runs: anonymous callers, the two roles, the user
commands and how a refusal reaches the user. The session's server; names of their own (uuid), removed."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.credentials import Credential
from core.errors import AccessRefused
from services.mlflow_server import TrackingServer
from tests.tracking_server import as_user, credential
from tests.training.test_tracking_server import btcflow, cli_env
from training.registry import promote_version
from training.specs import SPECS
from training.tracking import EXPERIMENT_KIND

MLFLOW_API = "/api/2.0/mlflow"


@dataclass(frozen=True)
class Made:
    experiment: str
    experiment_id: str
    run_id: str
    model: str
    version: str


@pytest.fixture(scope="module")
def made(tracking_server: TrackingServer) -> Iterator[Made]:
    """As the trainer: an experiment, a run with an artifact, a registered model and a version of it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_server.uri, tracking_server.uri)  # the session calls as the trainer
    tag = uuid.uuid4().hex[:8]
    experiment = f"test-auth-{tag}"
    experiment_id = client.create_experiment(experiment, tags=dict([EXPERIMENT_KIND]))  # as training makes it
    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, "hello", "note.txt")
    client.set_terminated(run.info.run_id)
    model = f"btc-auth-{tag}"
    client.create_registered_model(model)
    mv = client.create_model_version(model, f"{run.info.artifact_uri}/note.txt", run_id=run.info.run_id)
    try:
        yield Made(experiment, experiment_id, run.info.run_id, model, str(mv.version))
    finally:
        client.delete_registered_model(model)
        client.delete_experiment(experiment_id)


def test_an_anonymous_request_is_refused_401(tracking_server: TrackingServer) -> None:
    search = httpx.post(f"{tracking_server.uri}{MLFLOW_API}/experiments/search", json={"max_results": 1})
    create = httpx.post(f"{tracking_server.uri}{MLFLOW_API}/registered-models/create", json={"name": "x"})
    assert (search.status_code, create.status_code) == (401, 401)
    assert httpx.get(f"{tracking_server.uri}/health").status_code == 200  # what supervisors probe stays open


def test_the_reader_reads_and_downloads_but_changes_nothing(
    tracking_server: TrackingServer, made: Made, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    as_user(monkeypatch, credential(tracking_server, "reader"))
    client = MlflowClient(tracking_server.uri, tracking_server.uri)
    assert client.get_run(made.run_id).info.run_id == made.run_id
    assert [v.version for v in client.search_model_versions(f"name='{made.model}'")] == [made.version]
    got = client.download_artifacts(made.run_id, "note.txt", str(tmp_path))
    assert Path(got).read_text() == "hello"

    refused = {
        "create a run": lambda: client.create_run(made.experiment_id),
        "register a version": lambda: client.create_model_version(made.model, "s3://x/model"),
        "move a stage": lambda: client.transition_model_version_stage(made.model, made.version, "Staging"),
        "set an alias": lambda: client.set_registered_model_alias(made.model, "r", made.version),
    }
    for what, call in refused.items():
        with pytest.raises(MlflowException) as caught:
            call()
        assert caught.value.error_code == "PERMISSION_DENIED", what


def test_the_trainer_creates_runs_versions_stages_and_aliases(
    tracking_server: TrackingServer, made: Made, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_server.uri, tracking_server.uri)  # the session's trainer
    run = client.create_run(made.experiment_id)
    client.set_terminated(run.info.run_id)
    mv = client.create_model_version(made.model, f"{run.info.artifact_uri}/x", run_id=run.info.run_id)
    client.transition_model_version_stage(made.model, mv.version, "Staging")
    client.set_registered_model_alias(made.model, "candidate", mv.version)
    assert client.get_model_version_by_alias(made.model, "candidate").version == mv.version
    assert Path(client.download_artifacts(made.run_id, "note.txt", str(tmp_path))).read_text() == "hello"


def test_a_user_of_no_role_may_do_nothing(
    tracking_server: TrackingServer, made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    admin = tracking_server.auth_admin()
    nobody = admin.add_user(f"nobody-{uuid.uuid4().hex[:6]}", "reader")
    reader_role = next(r for r in admin._roles() if r["name"] == "reader")
    admin._call(
        "DELETE",
        "/api/3.0/mlflow/roles/unassign",
        json={"username": nobody.username, "role_id": reader_role["id"]},
    )
    try:
        as_user(monkeypatch, nobody)
        client = MlflowClient(tracking_server.uri, tracking_server.uri)
        calls = (
            lambda: client.get_run(made.run_id),
            lambda: client.create_run(made.experiment_id),
        )
        for call in calls:
            with pytest.raises(MlflowException) as caught:
                call()
            assert caught.value.error_code == "PERMISSION_DENIED"
        assert made.experiment not in [e.name for e in client.search_experiments()]  # sees none of ours
        assert client.search_model_versions(f"name='{made.model}'") == []
    finally:
        admin.remove_user(nobody.username)


def test_user_add_list_remove_through_the_cli(tracking_server: TrackingServer, tmp_path: Path) -> None:
    env = cli_env(tracking_server)
    name = f"analyst-{uuid.uuid4().hex[:6]}"
    added = btcflow("tracking", "user", "add", name, "--role", "reader", env=env, cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    password = added.stdout.strip().splitlines()[-1]  # shown once, on the last line
    assert added.stdout.count(password) == 1 and password not in added.stderr
    search = f"{tracking_server.uri}{MLFLOW_API}/experiments/search"
    assert httpx.post(search, json={"max_results": 1}, auth=(name, password)).status_code == 200

    listed = btcflow("tracking", "user", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split(None, 1)[1] for line in listed.stdout.splitlines()}
    assert (
        rows[name] == "reader" and rows["btcflow-trainer"] == "trainer" and rows["btcflow-reader"] == "reader"
    )
    assert password not in listed.stdout

    again = btcflow("tracking", "user", "add", name, "--role", "trainer", env=env, cwd=tmp_path)
    assert again.returncode == 2 and "exists already" in again.stderr

    removed = btcflow("tracking", "user", "remove", name, env=env, cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert httpx.post(search, json={"max_results": 1}, auth=(name, password)).status_code == 401


def test_a_wrong_password_is_one_line_naming_user_and_server(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    trainer = credential(tracking_server, "trainer")
    env = {**cli_env(tracking_server), "MLFLOW_TRACKING_PASSWORD": "not-" + trainer.password}
    result = btcflow("history", "--model", "close", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"MLflow server {tracking_server.uri} refused user '{trainer.username}'" in lines[0]
    assert "401" in lines[0] and trainer.password not in result.stderr


def test_the_kept_credential_of_the_role_is_found_when_none_is_given(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    env = {k: v for k, v in cli_env(tracking_server).items() if not k.startswith("MLFLOW_TRACKING_USERNAME")}
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    result = btcflow("history", "--model", "close", env=env, cwd=tmp_path)  # the server's data dir: trainer
    assert result.returncode == 0, result.stderr


def test_a_role_that_may_not_is_refused_naming_what(
    tracking_server: TrackingServer, made: Made, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.training.test_history import training_settings

    monkeypatch.setitem(SPECS, "close", dataclasses.replace(SPECS["close"], registered_name=made.model))
    settings = training_settings(tmp_path).model_copy(
        update={"tracking_uri_env": tracking_server.uri, "experiment": made.experiment}
    )
    reader: Credential = credential(tracking_server, "reader")
    as_user(monkeypatch, reader)
    with pytest.raises(AccessRefused, match="403") as caught:  # it reads the version, then may not move it
        promote_version(settings, "close", int(made.version))
    refused = f"MLflow server {tracking_server.uri} refused user '{reader.username}' moving Production of"
    assert str(caught.value).startswith(refused), caught.value
    assert str(caught.value).endswith("the user's role does not allow it (HTTP 403)")

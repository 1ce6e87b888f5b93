"""Issue 15.4 (unit level): credentials are scrubbed wherever the platform writes text.

The end-to-end check (a search with credentials in the tracking URI and the AWS variables,
then every log, MLflow param/tag, the report and the Ray experiment folder grepped) is
``tests/test_search_engine.py::test_no_secret_leaves_the_process``.
"""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from platform.secrets import register_env_secrets, scrub

PASSWORD = "Pw-0a9b8c7d6e"
KEY_ID = "AKIAZZUNITKEY0A9B8C7"
SECRET = "unitSECRETaccess/KEY+0a9b8c7d6e5f4a3b2c1d"


@pytest.fixture
def creds(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://bob:{PASSWORD}@db.internal:5432/mlflow")
    register_env_secrets()
    return tmp_path


def _leak_free(text: str) -> bool:
    return not any(s in text for s in (PASSWORD, KEY_ID, SECRET))


def test_scrub_removes_uri_user_info_keys_and_registered_values(creds):
    text = (f"connect postgresql://bob:{PASSWORD}@db.internal/mlflow failed; key {KEY_ID} secret {SECRET}; "
            f"password alone {PASSWORD}; other key AKIAOTHERKEY00000000")
    clean = scrub(text)
    assert _leak_free(clean) and "AKIAOTHERKEY" not in clean and "db.internal" in clean


def test_http_tracking_uri_credentials_move_to_mlflow_variables(monkeypatch):
    from platform.tracking import tracking_uri

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://alice:{PASSWORD}@mlflow.example:5000")
    import os

    assert tracking_uri() == "https://mlflow.example:5000"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == PASSWORD


def _store(tmp_path):
    from platform.tracking import ScrubbingClient

    client = ScrubbingClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("scrub", artifact_location=(tmp_path / "art").as_uri())
    return client, exp


def test_every_param_tag_and_text_written_through_the_client_is_scrubbed(creds):
    import mlflow
    from mlflow.tracking import MlflowClient

    client, exp = _store(creds)
    uri = f"postgresql://bob:{PASSWORD}@db.internal/mlflow"
    run = client.create_run(exp, tags={"source": uri}).info.run_id
    client.log_param(run, "endpoint", uri)
    client.set_tag(run, "note", f"key {KEY_ID}")
    client.log_batch(run, params=[mlflow.entities.Param("secret", SECRET)],
                     tags=[mlflow.entities.RunTag("t", f"s={SECRET}")])
    client.log_text(run, f"uri {uri}", "notes.txt")
    client.log_dict(run, {"uri": uri}, "spec.json")
    raw = MlflowClient(f"sqlite:///{creds / 'mlflow.db'}").get_run(run)
    assert _leak_free(str(raw.data.params) + str(raw.data.tags)), raw.data
    for f in (creds / "art").rglob("*.*"):
        assert _leak_free(f.read_text()), f


def test_failure_reason_is_scrubbed_and_the_uri_is_not_pickled(creds):
    from ray.tune.callback import CallbackList

    from platform.search.ledger import TrialLedger
    from platform.tracking import MLflowSearchCallback

    client, exp = _store(creds)
    parent = client.create_run(exp).info.run_id
    ledger = TrialLedger("val_psnr", "max", epochs=3)
    cb = MLflowSearchCallback(client, exp, parent, creds / "tb", ledger)
    cb.uri = f"postgresql://bob:{PASSWORD}@db.internal/mlflow"  # as a database store URI would be
    err = creds / "error.txt"
    err.write_text(f"Traceback ...\nbotocore.exceptions.ClientError: denied for {KEY_ID} at "
                   f"http://bob:{PASSWORD}@minio:9000 (secret {SECRET})\n")
    trial = SimpleNamespace(trial_id="t1", config={}, error_file=str(err))
    callbacks = CallbackList([ledger, cb])  # Tune's own dispatch, in the search's order
    callbacks.on_trial_error(iteration=0, trials=[], trial=trial)
    reason = ledger.stop_reasons["t1"]
    assert reason.startswith("failed (exception): ClientError") and _leak_free(reason), reason
    tags = client.get_run(cb.run_ids["t1"]).data.tags
    assert tags["stop_reason"] == reason and _leak_free(tags["stop_reason"])
    assert _leak_free(pickle.dumps([ledger, cb]).decode("latin-1"))  # what Tune saves in tuner.pkl
    assert _leak_free(str(callbacks.get_state()))


def test_cli_errors_are_scrubbed(creds, capsys):
    from platform.errors import ConfigError, cli_main

    @cli_main
    def main():
        raise ConfigError(f"cannot reach postgresql://bob:{PASSWORD}@db.internal/mlflow with {KEY_ID}")

    assert main() == 2
    err = capsys.readouterr().err
    assert "db.internal" in err and _leak_free(err)


def test_log_records_are_scrubbed_once_the_scrubber_is_installed(creds, caplog):
    import logging

    from platform.secrets import install_log_scrubber

    install_log_scrubber()
    logging.getLogger("some.library").warning("auth header Credential=%s/x secret %s", KEY_ID, SECRET)
    assert "Credential=***" in caplog.text and _leak_free(caplog.text)

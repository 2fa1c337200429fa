"""Every command of both command lines (``python -m crossfit_mlops``, ``python -m crossfit_stack``),
given a bad argument, a missing object or a server that is down, ends with exit 2 and one line
``error: ...`` naming what is wrong: never a Python traceback.

The servers are "down" because the settings point at a port nobody listens on; the missing
objects live in a real MLflow registry behind a real server this module starts (reached, like
every command reaches it, through the settings' port, never MLflow's process-wide URI).
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from crossfit_mlops.ops import cli as ml_cli
from crossfit_stack import commands as stack_cli
from tests.support.services import free_port


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``main(argv)`` in a temp state dir with MLflow and Airflow on closed ports; returns
    ``(exit status, seconds)``. The environment is restored afterwards (commands that
    talk to MLflow add its client limits to os.environ)."""
    saved = dict(os.environ)
    closed = free_port()
    monkeypatch.setenv("CROSSFIT_STATE_DIR", str(tmp_path / "state"))
    # the commands' tracking URI follows CROSSFIT_MLFLOW_PORT (the settings pass it to each
    # client); MLflow's own process-wide variable is not set here, and an inherited one is removed
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CROSSFIT_MLFLOW_PORT", str(closed))
    monkeypatch.setenv("CROSSFIT_AIRFLOW_PORT", str(closed))
    for name in ("CROSSFIT_RAW_FILE", "CROSSFIT_FEAST_DIR", "CROSSFIT_FEAST_REGISTRY", "CROSSFIT_FEAST_ONLINE_STORE"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> tuple[int, float]:
        """``argv`` for ``python -m crossfit_mlops``; ``"stack:", *argv`` for ``python -m crossfit_stack``."""
        main = stack_cli.main if argv[:1] == (STACK,) else ml_cli.main
        argv = argv[1:] if argv[:1] == (STACK,) else argv
        start = time.monotonic()
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse's own refusals
            status = exc.code
        return status, time.monotonic() - start

    yield run
    os.environ.clear()
    os.environ.update(saved)


def _assert_one_line_error(capsys, status, *words: str) -> str:
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


STACK = "stack:"  # the first word of an argv for the stack's command line

BAD_ARGUMENTS = [
    (["registry", "card", "x"], ["whole number", "'x'"]),
    (["registry", "lineage", "-3"], ["whole number", "'-3'"]),
    (["registry", "card"], ["needs a version number"]),
    (["registry", "uses"], ["needs a feature view name"]),
    ([STACK, "pipeline", "--conf", "[1]"], ["--conf must be a JSON object", "list"]),
    ([STACK, "pipeline", "--conf", "{nope"], ["--conf is not valid JSON"]),
    ([STACK, "monitor", "--snapshot", "2026-01-01", "--conf", "3"], ["--conf must be a JSON object"]),
    ([STACK, "monitor", "--snapshot", "2026-13-45"], ["2026-13-45"]),
    ([STACK, "registry", "card", "x"], ["whole number", "'x'"]),
    (["ingest", "--snapshot", "2026-13-45"], ["2026-13-45"]),
    (["prepare", "--snapshot", "2026-13-45"], ["2026-13-45"]),
    (["ingest", "--snapshot", "2026-02-01", "--seed", "-1", "--rows", "5000"], ["seed", "-1"]),
    (["generate", "--out", "x.csv", "--rows", "1000000000000"], ["rows must be between 10 and 2000000"]),
    (["generate", "--out", "x.csv", "--rows", "700000"], ["rows=700000", "632000", "--max-athlete-id"]),
    (["generate", "--out", "x.csv", "--rows", "5000", "--max-athlete-id", "4999"], ["rows=5000", "4999"]),
    (["generate", "--out", "x.csv", "--max-athlete-id", "0"], ["max_athlete_id", "got 0"]),
    (["validate", "--snapshot", "../etc"], ["../etc"]),
    (["features", "--snapshot", "2026-01-01"], ["2026-01-01"]),
    ([STACK, "start", "nosuch"], ["nosuch"]),
    ([STACK, "stop", "nosuch"], ["nosuch"]),
    # the commands that moved say where, and run nothing
    (["stack", "up"], ["moved", "python -m crossfit_stack up"]),
    (["stack", "start", "mlflow"], ["moved", "python -m crossfit_stack start mlflow"]),
    (["pipeline", "--rows", "5000"], ["moved", "python -m crossfit_stack pipeline --rows 5000"]),
    (["monitor", "--snapshot", "2026-01-01"], ["moved", "python -m crossfit_stack monitor --snapshot 2026-01-01"]),
    (["serve", "--port", "99999"], ["99999"]),
    (["serve", "--port", "0"], ["port 0"]),
    (["serve", "--refresh-seconds", "-1"], ["-1"]),
    (["serve", "--max-batch", "0"], ["0"]),
    (["catalog", "--out", "/dev/null"], ["--out", "/dev/null", "a character device"]),
]


@pytest.mark.parametrize(("argv", "words"), BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_a_bad_argument_is_one_error_line_and_exit_2(cli, capsys, argv, words):
    status, _ = cli(*argv)
    _assert_one_line_error(capsys, status, *words)


SERVER_DOWN = [
    ["registry", "show"],
    ["registry", "history"],
    ["registry", "rollback"],
    ["registry", "card", "3"],
    ["registry", "lineage", "3"],
    ["registry", "uses", "athlete_features_v2"],
    [STACK, "pipeline"],
    [STACK, "pipeline", "--conf", '{"sample_size": 300}'],
    [STACK, "monitor", "--snapshot", "2026-01-01"],
    [STACK, "registry", "show"],
    ["predict-two-hop", "--athlete-id", "1"],
    ["catalog", "--tracking-uri", "http://127.0.0.1:1"],
]


@pytest.mark.parametrize("argv", SERVER_DOWN, ids=[" ".join(a) for a in SERVER_DOWN])
def test_with_mlflow_and_airflow_down_every_command_fails_fast_naming_the_server(cli, capsys, argv):
    status, seconds = cli(*argv)
    line = _assert_one_line_error(capsys, status, "not reachable", "127.0.0.1:")
    assert "MLflow" in line or "Airflow" in line
    assert seconds < 5, f"{argv} took {seconds:.1f} s to say the server is down"


def _walked(stack: bool) -> set[str]:
    """The subcommands of one command line that the walks above and COVERED_ELSEWHERE reach."""
    argvs = [argv for argv, _ in BAD_ARGUMENTS] + SERVER_DOWN
    words = {argv[1] if stack else argv[0] for argv in argvs if (argv[0] == STACK) == stack}
    return words | {name.removeprefix(STACK) for name in COVERED_ELSEWHERE if name.startswith(STACK) == stack}


@pytest.mark.parametrize(("stack", "cli_module"), [(False, ml_cli), (True, stack_cli)], ids=["crossfit_mlops", "crossfit_stack"])
def test_the_walk_covers_every_subcommand(stack, cli_module):
    """A new subcommand of either command line must be added to the walks above."""
    sub = next(a for a in cli_module.build_parser()._actions if a.dest == "command")
    assert set(sub.choices) <= _walked(stack), sorted(set(sub.choices) - _walked(stack))


# walked by their own tests below, and the stack's up / down / status in
# tests/reliability/test_stack_supervision.py (ports taken, bad settings, a service that cannot start)
COVERED_ELSEWHERE = {
    STACK + "up": "test_stack_supervision.py::test_bad_settings_are_refused_naming_the_variable",
    STACK + "down": "test_stack_supervision.py::test_a_port_held_by_another_program_is_named",
    STACK + "status": "test_stack_supervision.py::test_a_service_that_cannot_start_is_reported_with_its_log",
    "settings": "test_bad_settings_are_one_error_line",
    "generate": "test_generate_refuses_what_is_not_a_regular_file",
    "materialize": "test_materialize_before_feast_apply_says_to_apply",
    "feast-apply": "test_feast_apply_with_its_sql_registry_down_is_one_error_line",
}


def test_feast_apply_with_its_sql_registry_down_is_one_error_line(cli, capsys, monkeypatch):
    monkeypatch.setenv("CROSSFIT_FEAST_REGISTRY_URI", f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x")
    status, _ = cli("feast-apply")
    _assert_one_line_error(capsys, status, "the database does not answer", "Connection refused")


def test_materialize_before_feast_apply_says_to_apply(cli, capsys):
    status, _ = cli("materialize", "--snapshot", "2026-01-01")
    _assert_one_line_error(capsys, status, "does not exist", "feast-apply")


def test_bad_settings_are_one_error_line(cli, capsys, monkeypatch):
    monkeypatch.setenv("CROSSFIT_SERVING_REFRESH_S", "-5")
    status, _ = cli("settings")
    _assert_one_line_error(capsys, status, "CROSSFIT_SERVING_REFRESH_S")


# --- missing objects in a real registry ----------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory):
    """A real MLflow server for this module's registry tests (each test its own model name)."""
    from tests.support.services import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


@pytest.fixture
def registry(cli, mlflow_url, monkeypatch):
    """``(client, name)``: a registered model with v1 as the champion on the module's MLflow server,
    which the commands reach through CROSSFIT_MLFLOW_PORT; the model's name is this test's own."""
    from urllib.parse import urlsplit

    from mlflow import MlflowClient

    name = f"cli_errors_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CROSSFIT_MLFLOW_PORT", str(urlsplit(mlflow_url).port))
    monkeypatch.setenv("CROSSFIT_REGISTERED_MODEL", name)
    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    client.create_registered_model(name)
    run = client.create_run("0")  # a version's source must be in a run's artifacts
    client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", "1")
    return client, name


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["registry", "card", "7"], ["not found", "7"]),
        (["registry", "lineage", "7"], ["not found", "7"]),
    ],
)
def test_a_version_that_does_not_exist_is_one_error_line(cli, capsys, registry, argv, words):
    status, _ = cli(*argv)
    _assert_one_line_error(capsys, status, *words)


def test_a_model_that_does_not_exist_is_one_error_line(cli, capsys, registry, monkeypatch):
    monkeypatch.setenv("CROSSFIT_REGISTERED_MODEL", "no_such_model")
    status, _ = cli("registry", "show")
    _assert_one_line_error(capsys, status, "not found", "no_such_model")


@pytest.mark.parametrize("previous", ["7", "abc"])
def test_rollback_to_a_previous_champion_that_is_missing_changes_nothing(cli, capsys, registry, previous):
    client, name = registry
    client.set_model_version_tag(name, "1", "previous_champion", previous)
    status, _ = cli("registry", "rollback")
    _assert_one_line_error(capsys, status, "previous_champion", previous, "nothing was changed")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"


# --- output paths: a new path or a regular file, nothing else ---------------------------------------
def _fifo(path):
    os.mkfifo(path)


def _device(path):
    import stat

    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # a null device of our own


def _symlink(path):
    target = path.parent / "target.txt"
    target.write_text("not yours\n")
    path.symlink_to(target)


def _directory(path):
    path.mkdir()


@pytest.mark.parametrize(("make", "kind"), [(_fifo, "a FIFO"), (_device, "a character device"),
                                             (_symlink, "a symbolic link"), (_directory, "a directory")])  # fmt: skip
def test_generate_refuses_what_is_not_a_regular_file(cli, capsys, tmp_path, make, kind):
    out = tmp_path / "athletes.csv"
    make(out)
    before = os.lstat(out)
    status, _ = cli("generate", "--out", str(out), "--rows", "50")
    _assert_one_line_error(capsys, status, "--out", str(out), kind)
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino), "the path was replaced"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "a temporary was left"
    if make is _symlink:
        assert (tmp_path / "target.txt").read_text() == "not yours\n"


def test_generate_writes_a_new_path_and_replaces_a_regular_file(cli, tmp_path):
    out = tmp_path / "athletes.csv"
    assert cli("generate", "--out", str(out), "--rows", "50")[0] == 0
    out.write_text("old\n")
    assert cli("generate", "--out", str(out), "--rows", "50")[0] == 0
    assert out.read_text().startswith("athlete_id")


def test_generate_with_a_larger_id_space_writes_ids_beyond_the_real_range(cli, capsys, tmp_path):
    out = tmp_path / "athletes.csv"
    assert cli("generate", "--out", str(out), "--rows", "2000", "--max-athlete-id", "10000000")[0] == 0
    assert '"max_athlete_id": 10000000' in capsys.readouterr().out
    ids = [int(line.split(",", 1)[0]) for line in out.read_text(encoding="utf-8").splitlines()[1:] if line[0] != ","]
    assert max(ids) > 632_000 and max(ids) <= 10_000_000

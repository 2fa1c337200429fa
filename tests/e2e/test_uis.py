"""The UIs as a user uses them, in headless Chromium (Debian's chromium + chromium-driver, Selenium).

Against a real local stack (MLflow + Airflow processes, own ports and state dir):

1. log into the Airflow UI with the generated admin password;
2. open ``crossfit_training_pipeline``, press *Trigger*, edit the form (snapshot, rows, the gate's
   R² floor; the grid stays the default 8 entries, shown in a JSON editor), submit, and wait until
   the run succeeds (the run itself is found through the REST API);
3. in the MLflow UI, find the DAG run's parent run and its 8 child runs, open the comparison of
   the children and see the metric and emissions columns;
4. open the registry and see ``@champion``;
5. Feast's web UI (``CROSSFIT_FEAST_UI=1``, started by the stack): the feature views and the
   feature services of the project, and a feature view's features.

Screenshots are saved under ``$CROSSFIT_E2E_SCREENSHOTS`` (default: the test's temp dir), one per
step, and their paths printed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from crossfit_stack.feast_ui import missing_packages
from tests.support.services import QUIET_ENV, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAG = "crossfit_training_pipeline"
SNAPSHOT = "2026-11-04"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from crossfit_stack import config, control, provision

    base = tmp_path_factory.mktemp("e2e")
    env = {
        **QUIET_ENV,
        "CROSSFIT_STATE_DIR": str(base / "state"),
        "CROSSFIT_MLFLOW_PORT": str(free_port()),
        "CROSSFIT_AIRFLOW_PORT": str(free_port()),
        # its own task-log server port: two stacks of the suite run at once (8793 was taken)
        "CROSSFIT_WORKER_LOG_PORT": str(free_port()),
        # Feast's UI is off by default; here the stack starts it (after its feast apply)
        "CROSSFIT_FEAST_UI": "1",
        "CROSSFIT_FEAST_UI_PORT": str(free_port()),
    }
    saved = {k: os.environ.get(k) for k in [*env, "MLFLOW_TRACKING_URI", "AIRFLOW_HOME"]}
    os.environ.update(env)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("AIRFLOW_HOME", None)
    cfg = config.config_from_env()
    try:
        client = control.up_and_connect(cfg, DAG)
        yield {"cfg": cfg, "client": client, "password": provision.ensure_secrets(cfg)["admin_password"]}
    finally:
        control.down(cfg)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromium-driver are missing: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1000"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(2)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("CROSSFIT_E2E_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _snap(driver, shots: Path, name: str) -> None:
    path = shots / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def _wait(driver, condition, timeout: float = 120, what: str = ""):
    """Wait for ``condition``; on a timeout, keep a screenshot of what the page showed instead.

    The UIs are React apps that re-render while they load, so an element found in one poll can
    be gone by the time the condition reads it: a stale reference means "not yet", poll again.
    """
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        wait = WebDriverWait(
            driver, timeout, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,)
        )
        return wait.until(condition, message=what)
    except TimeoutException:
        folder = Path(os.environ.get("CROSSFIT_E2E_SCREENSHOTS") or "/tmp")
        driver.save_screenshot(str(folder / f"failed_{what.replace(' ', '_')[:40]}.png"))
        raise


def _click_button(driver, text: str, css: str = "button", index: int = 0, what: str = "") -> None:
    """Click the ``index``-th button labelled ``text``, finding it again if a re-render replaced it."""
    from selenium.webdriver.common.by import By

    def clicked(d) -> bool:
        buttons = [b for b in d.find_elements(By.CSS_SELECTOR, css) if b.text.strip() == text]
        if not buttons:
            return False
        buttons[index].click()
        return True

    _wait(driver, clicked, what=what or f"{text} button")


def _on_element(driver, by: str, value: str, action, what: str, index: int = 0):
    """Find an element and act on it in one step of a wait, so that a React re-render replacing it
    between the find and the action (a stale reference) is retried instead of failing the test.
    Returns what ``action`` returned (True if that was None)."""

    def acted(d):
        found = d.find_elements(by, value)
        if not found:
            return False
        result = action(found[index])
        return True if result is None else result

    return _wait(driver, acted, what=what)


def _text_present(text: str, ignore_case: bool = False):
    from selenium.webdriver.common.by import By

    def seen(d) -> bool:
        body = d.find_element(By.TAG_NAME, "body").text
        return text.lower() in body.lower() if ignore_case else text in body

    return seen


def _set_input(driver, element, value: str) -> None:
    """Replace a React-controlled input's value the way a user does: select all, type."""
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(value)


def test_feast_ui_shows_the_feature_views_and_services(stack, browser, shots):
    import requests

    from crossfit_stack import control

    assert missing_packages() == [], "Feast's UI needs its grpcio extra: requirements.txt installs feast[grpcio]"

    cfg, driver = stack["cfg"], browser
    assert control.start_feast_ui(cfg) == "reused"  # `up` started it
    api = requests.get(f"{cfg.feast_ui_url}/api/v1/feature_views", params={"project": "crossfit"}, timeout=30)
    assert sorted(v["spec"]["name"] for v in api.json()["featureViews"]) == ["athlete_features_v1", "athlete_features_v2"]

    driver.get(f"{cfg.feast_ui_url}/p/crossfit/feature-view/")
    for name in ("athlete_features_v1", "athlete_features_v2"):
        _wait(driver, _text_present(name), what=f"{name} in Feast's feature view list")
    time.sleep(1)
    _snap(driver, shots, "15_feast_feature_views")
    driver.get(f"{cfg.feast_ui_url}/p/crossfit/feature-service/")
    _wait(driver, _text_present("model_v2"), what="model_v2 in Feast's feature service list")
    driver.get(f"{cfg.feast_ui_url}/p/crossfit/feature-view/athlete_features_v2")
    for feature in ("bmi", "region_code"):
        _wait(driver, _text_present(feature), what=f"{feature} on athlete_features_v2's page")
    time.sleep(1)
    _snap(driver, shots, "16_feast_feature_view_v2")


@pytest.fixture(scope="module")
def ui_run(stack, browser, shots) -> str:
    """Log in, trigger the DAG from its trigger form, wait for success; return the run id."""
    from selenium.webdriver.common.by import By

    cfg, client, driver = stack["cfg"], stack["client"], browser
    driver.get(f"{cfg.airflow_url}/")
    _wait(driver, lambda d: d.find_elements(By.NAME, "username"), what="login form")
    _snap(driver, shots, "01_airflow_login")
    _on_element(driver, By.NAME, "username", lambda e: _set_input(driver, e, "admin"), what="user name field")
    _on_element(driver, By.NAME, "password", lambda e: _set_input(driver, e, stack["password"]), what="password field")
    _click_button(driver, "Sign in", what="Sign in button")
    _wait(driver, lambda d: "/auth/login" not in d.current_url, what="logged in")

    driver.get(f"{cfg.airflow_url}/dags/{DAG}")
    _click_button(driver, "Trigger", what="Trigger button")
    _wait(driver, lambda d: d.find_elements(By.NAME, "element_rows"), what="trigger form")
    time.sleep(1)  # the form fills its defaults after it appears
    for field, value in (("element_snapshot", SNAPSHOT), ("element_rows", "5000"), ("element_r2_floor", "0.0")):
        _on_element(driver, By.NAME, field, lambda e, v=value: _set_input(driver, e, v), what=f"form field {field}")

    def editor_text(element) -> str:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        return element.get_attribute("innerText") or "(empty editor)"

    grid = _on_element(
        driver, By.CSS_SELECTOR, ".cm-editor, .monaco-editor", editor_text, what="the grid as a JSON editor in the form"
    )
    assert '"random_forest"' in grid
    _snap(driver, shots, "02_airflow_trigger_form")
    _click_button(driver, "Trigger", css="[role=dialog] button", index=-1, what="the form's Trigger button")

    runs = _wait(
        driver,
        lambda d: client.dag_runs(DAG, limit=5),
        what="the run the form triggered",
    )
    run = runs[-1]
    assert run["conf"]["snapshot"] == SNAPSHOT and run["conf"]["rows"] == 5000, run["conf"]
    assert run["conf"]["r2_floor"] == 0.0 and len(run["conf"]["grid"]) == 8
    finished = client.wait_for_run(DAG, run["dag_run_id"], timeout=900, poll=3.0)
    assert finished["state"] == "success", f"{finished}; logs in {cfg.airflow_home / 'logs'}"
    driver.get(f"{cfg.airflow_url}/dags/{DAG}/runs/{run['dag_run_id']}")
    _wait(driver, _text_present("success", ignore_case=True), what="run page shows success")
    time.sleep(2)
    _snap(driver, shots, "03_airflow_run_success")
    return run["dag_run_id"]


def test_airflow_ui_triggered_run_succeeds(ui_run):
    assert ui_run


def test_mlflow_ui_shows_the_runs_their_comparison_and_the_champion(stack, browser, shots, ui_run):
    from mlflow import MlflowClient
    from selenium.webdriver.common.by import By

    cfg, driver = stack["cfg"], browser
    mlflow = MlflowClient(tracking_uri=cfg.mlflow_url, registry_uri=cfg.mlflow_url)
    experiment = mlflow.get_experiment_by_name("crossfit_athlete_airflow_run")
    parent = mlflow.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`airflow.run_id` = '{ui_run}' and tags.pipeline = '{DAG}'"
    )[0]
    children = mlflow.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert len(children) == 8

    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    driver.get(f"{cfg.mlflow_url}/#/experiments/{experiment.experiment_id}")
    _wait(driver, _text_present("Training runs"), what="experiment page")
    runs_url = f"{cfg.mlflow_url}/#/experiments/{experiment.experiment_id}/runs"
    driver.get(runs_url)

    def run_list_shows_the_parent(d) -> bool:
        if parent.info.run_name in d.find_element(By.TAG_NAME, "body").text:
            return True
        # A fresh browser's first visit is redirected to the experiment's GenAI overview
        # (`/overview/usage?workflowType=genai`), and that redirect can land after the navigation
        # above (a CI run ended there). Go to the run list again; a click on the side bar's
        # "Training runs" is intercepted by the overview's "Detect Issues" popover.
        if "/runs" not in d.current_url:
            d.get(runs_url)
        return False

    _wait(driver, run_list_shows_the_parent, what="parent run in the experiment's run list")
    time.sleep(2)
    _snap(driver, shots, "04_mlflow_experiment_runs")

    ids = json.dumps([c.info.run_id for c in children])
    driver.get(f"{cfg.mlflow_url}/#/compare-runs?runs={ids}&experiments={json.dumps([experiment.experiment_id])}")
    _wait(driver, _text_present("Comparing 8 Runs"), what="the comparison page")
    time.sleep(2)
    _snap(driver, shots, "05_mlflow_compare_runs")
    # the parameter and metric tables are below the plots: scroll to them as a user would
    _on_element(
        driver, By.XPATH, "//*[normalize-space()='Metrics']",
        lambda e: driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", e),
        index=-1, what="Metrics table",
    )
    time.sleep(1)
    for column in ("val_rmse", "val_r2", "test_rmse", "emissions_kg_co2eq", "energy_kwh", "feature_version"):
        _wait(driver, lambda d, c=column: c in d.execute_script("return document.body.innerText"), what=f"{column} in the comparison")
    _snap(driver, shots, "06_mlflow_compare_metrics")

    driver.get(f"{cfg.mlflow_url}/#/models/crossfit_total_lift")
    _wait(driver, _text_present("champion"), what="@champion in the registry")
    time.sleep(1)
    _snap(driver, shots, "07_mlflow_registry")
    assert mlflow.get_model_version_by_alias("crossfit_total_lift", "champion").version == "1"

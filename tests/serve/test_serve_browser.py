"""End to end: `t5electra serve` in a subprocess on 127.0.0.1, the playground in headless Chromium.

Needs Debian's chromium and chromium-driver (`apt-get install -y chromium chromium-driver`, done
by .ci/run) and selenium (the test extra). Without them the test FAILS with that instruction: a
browser test that silently skips would prove nothing.

Screenshots go to the test's tmp dir; with T5ELECTRA_UPDATE_SCREENSHOTS=1 they also replace
docs/img/playground.png and docs/img/playground-electra.png (the README's pictures).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from t5electra.serve.demo import build_demo_models

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_S = 120  # an upper bound only: a loaded CI machine imports torch slowly


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(tmp_path_factory, dirs: dict, env: dict | None = None):
    """`t5electra serve` on a free port in a subprocess: (url, process, log), stopped afterwards."""
    port = _free_port()
    log = tmp_path_factory.mktemp("browser-log") / "server.log"
    cmd = [sys.executable, "-m", "t5electra.cli", "serve", *[f"{k}={v}" for k, v in dirs.items()],
           "--host", "127.0.0.1", "--port", str(port), "--num-threads", "1", "--log-level", "warning"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return build_demo_models(tmp_path_factory.mktemp("browser-models"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, dirs):
    """`t5electra serve` with three tiny models; yields its base URL, stops it afterwards."""
    with _serve(tmp_path_factory, dirs) as running:
        yield running


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`t5electra serve` exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"`t5electra serve` did not answer on {url} within {WAIT_S} s:\n{log.read_text()}")


def _browser(profile: Path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install the browser with "
                    f"`apt-get update && apt-get install -y chromium chromium-driver` (as .ci/run does), "
                    f"or point CHROMIUM_BIN / CHROMEDRIVER at them")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: `.venv/bin/pip install -e '.[test]'`")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,980", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_playground_in_a_real_browser(server, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, proc, log = server
    driver = _browser(tmp_path / "profile")  # starts while the server loads its models
    try:
        _wait_until_up(url, proc, log)
        # The page re-renders a view on each answer: an element found a moment ago may be replaced.
        wait = WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))
        css = lambda sel: driver.find_elements(By.CSS_SELECTOR, sel)  # noqa: E731
        driver.get(url + "/")
        wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 3)

        # T5: a prompt with a task prefix -> beams with scores, and the encoder's attention.
        assert Select(driver.find_element(By.ID, "model")).first_selected_option.get_attribute("value") == "t5-tiny"
        Select(driver.find_element(By.ID, "prefix")).select_by_value("summarize: ")
        prompt = driver.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("the cat ate the meal.")
        driver.find_element(By.ID, "generate-btn").click()
        wait.until(lambda d: len(css("#beams tbody tr.beam")) == 3)
        for row in css("#beams tbody tr.beam"):
            cells = row.find_elements(By.TAG_NAME, "td")
            assert cells[1].text.strip() and float(cells[2].text) <= 0.0  # an output and its log-prob score
        wait.until(lambda d: css("#attention-map td.cell"))
        n = len(css("#attention-map tbody tr"))
        cells = css("#attention-map td.cell")
        assert n > 5 and len(cells) == n * n
        weights = [float(c.get_attribute("data-weight")) for c in cells[:n]]  # first row
        assert abs(sum(weights) - 1.0) < 0.01 and "rgba" in cells[0].get_attribute("style")
        Select(driver.find_element(By.ID, "layer")).select_by_value("1")
        Select(driver.find_element(By.ID, "head")).select_by_value("2")
        wait.until(lambda d: "layer 1 · head 2" in d.find_element(By.CSS_SELECTOR, "#attention-map caption").text)
        driver.save_screenshot(str(tmp_path / "playground-t5.png"))

        # ELECTRA: a sentence -> per-token replaced probability heat map, corrections, fill-mask.
        Select(driver.find_element(By.ID, "model")).select_by_value("electra-tiny")
        sentence = driver.find_element(By.ID, "sentence")
        sentence.clear()
        sentence.send_keys("the chef ate the meal.")
        driver.find_element(By.ID, "detect-btn").click()
        wait.until(lambda d: len(css("#heatmap .token")) == 6)
        tokens = css("#heatmap .token")
        assert [t.text.split("\n")[0] for t in tokens] == ["the", "chef", "ate", "the", "meal", "."]
        assert all("rgba(207, 34, 46" in t.get_attribute("style") for t in tokens)
        wait.until(lambda d: d.find_elements(By.ID, "corrected"))
        wait.until(lambda d: css("#attention-map td.cell") and "discriminator" in
                   d.find_element(By.CSS_SELECTOR, "#attention-map caption").text)
        tokens[2].click()  # "ate" -> [MASK] -> the generator's alternatives
        wait.until(lambda d: d.find_elements(By.ID, "filled"))
        assert driver.find_element(By.ID, "masked").get_attribute("value") == "the chef [MASK] the meal ."
        assert len(css("#fill-results .mask .pill")) == 5
        driver.save_screenshot(str(tmp_path / "playground-electra.png"))

        # A fine-tuned classifier: label names from id2label.
        Select(driver.find_element(By.ID, "model")).select_by_value("electra-tiny-sst2")
        driver.find_element(By.ID, "classify-btn").click()
        wait.until(lambda d: d.find_elements(By.ID, "label"))
        assert driver.find_element(By.ID, "label").text in ("negative", "positive")

        assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
    assert proc.poll() is None, f"the server died:\n{log.read_text()}"
    if os.environ.get("T5ELECTRA_UPDATE_SCREENSHOTS") == "1":
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "playground-t5.png", ROOT / "docs" / "img" / "playground.png")
        shutil.copy(tmp_path / "playground-electra.png", ROOT / "docs" / "img" / "playground-electra.png")


def test_playground_asks_for_the_api_key(tmp_path_factory, dirs, tmp_path):
    """A server started with $T5ELECTRA_API_KEY: the page loads, gets 401, shows the key form; a
    wrong key is refused, the right one loads the models and stays in this tab's sessionStorage."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    key = "browser-test-key-0123"
    driver = _browser(tmp_path / "profile")
    try:
        with _serve(tmp_path_factory, {"t5-tiny": dirs["t5-tiny"]}, env={"T5ELECTRA_API_KEY": key}) as (url, proc, log):
            _wait_until_up(url, proc, log)
            assert httpx.get(url + "/v1/models", timeout=10).status_code == 401
            wait = WebDriverWait(driver, WAIT_S)
            driver.get(url + "/")
            wait.until(lambda d: d.find_element(By.ID, "key-form").is_displayed())
            assert "needs an API key" in driver.find_element(By.ID, "error").text
            field = driver.find_element(By.ID, "api-key")
            assert field.get_attribute("type") == "password"
            field.send_keys("not-the-key-0000")
            driver.find_element(By.ID, "key-btn").click()
            wait.until(lambda d: "not accepted" in d.find_element(By.ID, "error").text)
            assert driver.find_element(By.ID, "key-form").is_displayed()
            driver.find_element(By.ID, "api-key").send_keys(key)
            driver.find_element(By.ID, "key-btn").click()
            wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 1)
            assert not driver.find_element(By.ID, "key-form").is_displayed()
            assert not driver.find_element(By.ID, "error").is_displayed()
            assert driver.execute_script("return sessionStorage.getItem('t5electra-api-key')") == key
            assert driver.execute_script("return localStorage.length") == 0
            driver.find_element(By.ID, "generate-btn").click()  # a POST with the key
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#beams tbody tr.beam"))
            assert proc.poll() is None, f"the server died:\n{log.read_text()}"
    finally:
        driver.quit()


def test_playground_with_chinese_input(tmp_path_factory, tmp_path):
    """Chinese demo models (WordPiece: one token per character; T5: SentencePiece with byte
    fallback): Chinese typed into the page comes back as Chinese tokens, a masked character is
    put back without spaces between the characters, T5 spells a character it never saw in bytes,
    and the classifier answers with its Chinese label names."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    zh_dirs = build_demo_models(tmp_path_factory.mktemp("browser-models-zh"), lang="zh")
    driver = _browser(tmp_path / "profile")
    try:
        with _serve(tmp_path_factory, zh_dirs) as (url, proc, log):
            _wait_until_up(url, proc, log)
            wait = WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))
            css = lambda sel: driver.find_elements(By.CSS_SELECTOR, sel)  # noqa: E731
            driver.get(url + "/")
            wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 3)

            Select(driver.find_element(By.ID, "model")).select_by_value("electra-tiny")
            sentence = driver.find_element(By.ID, "sentence")
            sentence.clear()
            sentence.send_keys("我们看了这本书，很好。")
            driver.find_element(By.ID, "detect-btn").click()
            wait.until(lambda d: len(css("#heatmap .token")) == 11)
            tokens = css("#heatmap .token")
            assert [t.text.split("\n")[0] for t in tokens] == list("我们看了这本书，很好。")
            tokens[2].click()  # 看 -> [MASK] -> the generator's alternatives
            wait.until(lambda d: d.find_elements(By.ID, "filled"))
            assert driver.find_element(By.ID, "masked").get_attribute("value") == "我们[MASK] 了这本书，很好。"
            pills = css("#fill-results .mask .pill")
            assert len(pills) == 5 and all(p.text.strip() for p in pills)

            Select(driver.find_element(By.ID, "model")).select_by_value("t5-tiny")
            Select(driver.find_element(By.ID, "prefix")).select_by_value("")
            prompt = driver.find_element(By.ID, "prompt")
            prompt.clear()
            prompt.send_keys("分词: 我们看了饕餮")  # 饕餮: in no training line, spelled in UTF-8 bytes
            driver.find_element(By.ID, "generate-btn").click()
            wait.until(lambda d: len(css("#beams tbody tr.beam")) == 3)
            wait.until(lambda d: "▁我们看了" in [th.text for th in css("#attention-map thead th")])
            heads = [th.text for th in css("#attention-map thead th")]
            assert "<0xE9>" in heads and "<unk>" not in heads  # the encoder's tokens, Chinese and bytes

            Select(driver.find_element(By.ID, "model")).select_by_value("electra-tiny-sst2")
            driver.find_element(By.ID, "classify-btn").click()
            wait.until(lambda d: d.find_elements(By.ID, "label"))
            assert driver.find_element(By.ID, "label").text in ("负面", "正面")
            driver.save_screenshot(str(tmp_path / "playground-zh.png"))

            assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
            severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert not severe, severe
            assert proc.poll() is None, f"the server died:\n{log.read_text()}"
    finally:
        driver.quit()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_by_signal_cleans_up_and_ends_by_that_signal(tmp_path_factory, dirs, sig):
    """SIGTERM / Ctrl-C: a graceful stop that still runs the command's clean-up (its temporary
    directory is removed: uvicorn used to re-raise the signal with the default handler, which
    skipped it) and ends the process by that signal (-sig here, 128 + sig in a shell), no traceback."""
    tmp = tmp_path_factory.mktemp("serve-tmpdir")
    with _serve(tmp_path_factory, dirs, env={"TMPDIR": str(tmp)}) as (url, proc, log):
        _wait_until_up(url, proc, log)
        assert [p.name for p in tmp.iterdir() if p.name.startswith("t5electra-demo-")], "no temp dir to clean"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        assert proc.returncode == -sig, log.read_text()
    assert not list(tmp.iterdir()), f"left behind: {list(tmp.iterdir())}"
    assert "Traceback" not in log.read_text(), log.read_text()

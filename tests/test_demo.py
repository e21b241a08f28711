"""`vgt demo` in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by selenium.

The browser tests run when /usr/bin/chromium, /usr/bin/chromedriver and selenium are present; without them they are
skipped locally but fail when VGT_REQUIRE_BROWSER=1 or CI is set (`.ci/run` installs them and sets it), so CI
always runs them. VGT_SKIP_BROWSER=1 skips them anyway.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from vgt.cli import main
from vgt.demo import pipeline_arguments, serve
from vgt.testing import TINY_CAPTIONS, fill_zero_parameters, tiny_pipeline

CAPTION = TINY_CAPTIONS[0]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1100,1500")

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def server():
    pipe = tiny_pipeline()
    fill_zero_parameters(pipe.generator.head, seed=1)
    pipe.generator.config.sampling.num_inference_steps = 2
    server = serve(pipe, "127.0.0.1", 0)
    yield server
    server.shutdown()
    server.server_close()


def browser_or_skip(user_data_dir: Path):
    """A headless Chromium session, or a skip (a failure where the browser is required)."""
    required = os.environ.get("VGT_REQUIRE_BROWSER") == "1" or bool(os.environ.get("CI"))
    if os.environ.get("VGT_SKIP_BROWSER") == "1":
        pytest.skip("VGT_SKIP_BROWSER=1")
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -r requirements.txt)")
    if missing:
        message = f"the browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture
def browser(tmp_path):
    driver = browser_or_skip(tmp_path / "chromium-profile")
    driver.set_script_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def wait_for_status(driver, prefix: str, timeout: float = 40.0) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element("id", "status").text.startswith((prefix, "Error")))
    status = driver.find_element("id", "status").text
    assert status.startswith(prefix), status
    return status


def result_sizes(driver) -> list[list[int]]:
    from selenium.webdriver.support.ui import WebDriverWait

    script = "return [...document.querySelectorAll('#results img.result')].map(i => [i.complete, i.naturalWidth, " \
             "i.naturalHeight])"
    WebDriverWait(driver, 10).until(lambda d: all(row[0] for row in d.execute_script(script)))
    return [row[1:] for row in driver.execute_script(script)]


def fill(driver, element_id: str, text: str) -> None:
    element = driver.find_element("id", element_id)
    element.clear()
    element.send_keys(text)


def test_page_generates_images_of_the_model_size(server, browser):
    browser.get(server.url)
    fill(browser, "prompt", CAPTION)
    fill(browser, "num-images", "2")
    fill(browser, "tokens-per-step", "2")
    browser.find_element("id", "generate").click()
    assert wait_for_status(browser, "Done") == "Done: 2 image(s)."
    assert result_sizes(browser) == [[32, 32], [32, 32]]
    assert browser.find_element("id", "progress").get_attribute("value") == "1"


def test_page_reports_errors_in_one_line(server, browser):
    browser.get(server.url)
    fill(browser, "prompt", "a zebra")
    browser.find_element("id", "generate").click()
    wait_for_status(browser, "Error")
    assert "not in this model's vocabulary" in browser.find_element("id", "status").text


def test_page_inpaints_a_painted_mask(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(server.url)
    browser.find_element("id", "tab-inpaint").click()
    browser.find_element("id", "pick-scene").click()
    wait_for_status(browser, "Loaded scene 0")
    fill(browser, "prompt", CAPTION)  # the tiny test model knows two captions only
    fill(browser, "num-images", "1")
    fill(browser, "brush", "6")
    browser.find_element("id", "paste-back").click()
    canvas = browser.find_element("id", "mask-canvas")  # 384 px on the page for the 32 px image
    ActionChains(browser).move_to_element_with_offset(canvas, -150, -150).click_and_hold() \
        .move_by_offset(100, 0).move_by_offset(0, 100).move_by_offset(-100, 0).release().perform()
    painted = browser.execute_script("""
        const d = document.getElementById('mask-canvas').getContext('2d').getImageData(0, 0, 32, 32).data;
        let top = 0, bottom = 0;
        for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) if (d[(y * 32 + x) * 4 + 3] > 0) {
            if (y < 16 && x < 16) top++; else if (y >= 16 && x >= 16) bottom++; }
        return [top, bottom];""")
    assert painted[0] > 20 and painted[1] == 0  # the drag painted the top-left quarter only
    browser.find_element("id", "inpaint").click()
    assert wait_for_status(browser, "Done") == "Done: 1 image(s)."
    assert result_sizes(browser) == [[32, 32]]
    # paste-back: the bottom-right quarter (never painted) is the input's own pixels
    same = browser.execute_async_script("""
        const done = arguments[0], input = document.getElementById('image-canvas').getContext('2d');
        const img = document.querySelector('#results img.result'), c = document.createElement('canvas');
        c.width = c.height = 32; const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
        const a = ctx.getImageData(16, 16, 16, 16).data, b = input.getImageData(16, 16, 16, 16).data;
        done(a.every((v, i) => v === b[i]));""")
    assert same


def test_api_checks_requests(server):
    def post(body: bytes) -> dict:
        request = urllib.request.Request(server.url + "api/generate", data=body, method="POST")
        try:
            with urllib.request.urlopen(request) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return json.loads(error.read())

    assert "bad request" in post(b"not json")["error"]
    assert set(post(json.dumps({"prompt": CAPTION}).encode())) == {"job"}
    with pytest.raises(ValueError, match="type a prompt"):
        pipeline_arguments({"prompt": " "})
    with pytest.raises(ValueError, match="num_images must lie"):
        pipeline_arguments({"prompt": CAPTION, "num_images": 100})
    with pytest.raises(ValueError, match="image data URL"):
        pipeline_arguments({"prompt": CAPTION, "image": "hello"})
    info = json.loads(urllib.request.urlopen(server.url + "api/info").read())
    assert info["size"] == 32 and info["defaults"]["num_inference_steps"] == 2


def test_demo_command_needs_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a VGT pipeline folder"):
        main(["demo", "--model", str(tmp_path), "--port", "0"])


def test_page_outpaints_around_a_shrunk_image(server, browser):
    browser.get(server.url)
    browser.find_element("id", "tab-inpaint").click()
    browser.find_element("id", "pick-scene").click()
    wait_for_status(browser, "Loaded scene 0")
    fill(browser, "prompt", CAPTION)
    fill(browser, "num-images", "1")
    browser.find_element("id", "outpaint-setup").click()  # 1/2: the image at 8..24 of 32 px, the border masked
    assert wait_for_status(browser, "Outpainting").startswith("Outpainting")
    alpha = browser.execute_script("""
        const d = document.getElementById('mask-canvas').getContext('2d').getImageData(0, 0, 32, 32).data;
        const a = (x, y) => d[(y * 32 + x) * 4 + 3];
        return [a(0, 0), a(16, 16), a(8, 8), a(7, 7)];""")
    assert alpha[0] > 0 and alpha[1] == 0 and alpha[2] == 0 and alpha[3] > 0
    browser.find_element("id", "inpaint").click()
    assert wait_for_status(browser, "Done") == "Done: 1 image(s)."
    assert result_sizes(browser) == [[32, 32]]


def test_demo_command_serves_the_page(server, tmp_path):
    import subprocess
    import sys

    model = tmp_path / "model"
    server.pipe.save_pretrained(model)
    command = [sys.executable, "-m", "vgt", "demo", "--model", str(model), "--port", "0", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("VGT demo at http://127.0.0.1:"), line
        url = line.split()[3]
        assert b"<canvas id=\"mask-canvas\">" in urllib.request.urlopen(url, timeout=10).read()
        assert json.loads(urllib.request.urlopen(url + "api/info", timeout=10).read())["size"] == 32
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_demo_command_names_the_fix_for_a_busy_port(server, tmp_path):
    model = tmp_path / "model"
    server.pipe.save_pretrained(model)
    port = server.server_address[1]
    with pytest.raises(SystemExit, match="choose another --port"):
        main(["demo", "--model", str(model), "--port", str(port), "--threads", "1"])

"""The playground page in a real browser (Debian's Chromium driven by Playwright): type a prompt, press Generate, and
watch the text stream in. The screenshot is saved under the test's temporary folder (printed with -s)."""

import json
import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip("no Chromium here: `apt-get install chromium` to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"]
        )
        yield browser
        browser.close()


def test_prompt_generate_and_see_the_text_stream_in(browser, server, tmp_path):
    page = browser.new_page()
    console_errors = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    requests_outside = []
    page.on("request", lambda r: None if r.url.startswith(server) else requests_outside.append(r.url))
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('release').textContent.includes('release 2026')")
    page.fill("#prompt", "ROMEO:\n")
    page.fill("#temperature", "0.8")
    page.fill("#max_tokens", "300")
    # A small model streams 300 tokens in a few milliseconds, all inside one frame. Chromium's own network
    # throttling (about 16 KB/s, so a few seconds for the whole stream) lets the events arrive as a slow link would.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": 16_000, "uploadThroughput": -1},
    )
    # Count how the completion grows: streamed text shows up in several steps, not at once at the end.
    page.evaluate(
        """() => { window.growth = []; new MutationObserver(() => window.growth.push(
               document.getElementById('completion').textContent.length))
             .observe(document.getElementById('output'), {subtree: true, childList: true, characterData: true}); }"""
    )
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.includes('tokens in')", timeout=30000)
    completion = page.text_content("#completion")
    growth = page.evaluate("window.growth")
    screenshot = tmp_path / "playground.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot: {screenshot}")
    assert len(completion) == 300
    print(f"the completion grew in {len(set(growth))} steps")
    assert len({n for n in growth if 0 < n < 300}) >= 10, growth[:50]  # it arrived piece by piece
    assert "300 tokens" in page.text_content("#status")
    assert requests_outside == []
    assert console_errors == []  # no missing favicon, no script error


def test_the_docs_page_renders_offline(browser, server):
    page = browser.new_page()
    requests_outside = []
    page.on("request", lambda r: None if r.url.startswith(server) else requests_outside.append(r.url))
    page.goto(server + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20000)
    assert "Character-level transformer" in page.text_content(".swagger-ui .info .title")
    assert page.locator(".opblock-summary-path", has_text="/v1/completions").count() >= 1
    assert requests_outside == []


TRY_IT_OUT = [
    ("OpenAI", "completions_v1_completions_post"),
    ("OpenAI", "chat_completions_v1_chat_completions_post"),
    ("Generation", "generate_generate_post"),
    ("Tokens", "tokenize_tokenize_post"),
    ("Tokens", "detokenize_detokenize_post"),
]


@pytest.mark.parametrize(("tag", "operation"), TRY_IT_OUT)
def test_swaggers_try_it_out_succeeds_with_its_own_example(browser, server, tag, operation):
    page = browser.new_page()
    page.goto(server + "/docs")
    block = page.locator(f"#operations-{tag}-{operation}")
    block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=20000)
    body = block.locator(".live-responses-table tbody .microlight").first.text_content()
    assert status.text_content().strip() == "200", body
    assert json.loads(body)  # the answer shown is JSON

"""The playground page in a real browser (Debian's Chromium driven by Playwright) against the real server: the text
streams in, each token shaded by the probability the server gave it; Stop ends a stream; chat mode; every sampling
and structured-output control is sent under its OpenAI/vLLM name; errors are shown; no console errors, and nothing
is fetched from anywhere but the server. One browser for the module; each test gets a fresh tab (its own
sessionStorage). Screenshots are saved under the test's temporary folder (printed with -s)."""

import json
import math
import os
import re
import shutil

import pytest

from conftest import call, start_server
from shared_code_location.runtime.net import wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STATUS_DONE = "document.getElementById('status').textContent.includes('tokens in')"
#: What Chromium logs for any response of that status (also when the page expects it and shows it).
HTTP_STATUS_LOGGED = "Failed to load resource: the server responded with a status of {}"


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


class Tab:
    """A fresh browser tab on the playground of `url`, which records what would make a user distrust it: console
    errors and script errors, requests to anywhere but the server; and the JSON bodies the page POSTs."""

    def __init__(self, browser, url: str):
        self.context = browser.new_context(viewport={"width": 1100, "height": 1200})
        self.page = self.context.new_page()
        self.url, self.errors, self.outside, self.posts = url, [], [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", self._request)

    def _request(self, request) -> None:
        if not request.url.startswith(self.url):
            self.outside.append(request.url)
        elif request.method == "POST":
            self.posts.append((request.url.removeprefix(self.url), request.post_data_json))

    def open(self) -> "Tab":
        self.page.goto(self.url + "/")
        self.page.wait_for_function("document.getElementById('release').textContent.includes('release 2026')")
        return self

    def generate(self) -> str:
        """Click Generate (or Send) and wait for the status line: the text it ends with."""
        self.page.click("#generate")
        self.page.wait_for_function(f"{STATUS_DONE} || document.querySelector('#status .error') !== null")
        return self.page.text_content("#status")

    def last_post(self, path: str) -> dict:
        return next(body for url, body in reversed(self.posts) if url == path)

    def throttle(self, bytes_per_second: int) -> None:
        """Chromium's own network throttling: a small model streams hundreds of tokens inside one frame, and a slow
        link lets the events arrive as they would from a bigger model."""
        cdp = self.context.new_cdp_session(self.page)
        cdp.send("Network.enable")
        conditions = {"offline": False, "latency": 0, "downloadThroughput": bytes_per_second, "uploadThroughput": -1}
        cdp.send("Network.emulateNetworkConditions", conditions)

    def check_clean(self, *expected: int | str) -> None:
        """No console or script error but Chromium's own line for each response status (or network error) that the
        test provoked."""
        lines = [HTTP_STATUS_LOGGED.format(e) if isinstance(e, int) else e for e in expected]
        assert [error for error in self.errors if not any(line in error for line in lines)] == []
        assert self.outside == []  # no CDN, no font service: it works offline


@pytest.fixture
def tab(browser, server):
    tab = Tab(browser, server)
    yield tab.open()
    tab.context.close()


def legend(probability: float) -> str:
    """The shade the page's legend gives a token of this probability."""
    steps = [(0.9, ""), (0.7, "p4"), (0.5, "p3"), (0.3, "p2"), (0.1, "p1")]
    return next((shade for lowest, shade in steps if probability >= lowest), "p0")


def _active_sequences(url: str) -> float:
    metrics = call(url, "/metrics")[1]
    return float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("active_sequences ")))


def test_the_text_streams_in_shaded_by_its_probabilities(tab, server, tmp_path):
    page = tab.page
    page.fill("#prompt", "ROMEO:\n")
    page.fill("#temperature", "0.8")
    page.fill("#max_tokens", "300")
    page.fill("#seed", "7")
    tab.throttle(60_000)  # the stream, with its log-probabilities, takes a few seconds
    # Count how the completion grows: streamed text shows up in several steps, not at once at the end.
    page.evaluate(
        """() => { window.growth = []; new MutationObserver(() => window.growth.push(
               document.getElementById('completion').textContent.length))
             .observe(document.getElementById('output'), {subtree: true, childList: true, characterData: true}); }"""
    )
    status = tab.generate()
    completion = page.text_content("#completion")
    growth = page.evaluate("window.growth")
    print(f"the completion grew in {len(set(growth))} steps")
    assert len(completion) == 300 and "300 tokens" in status and "finish reason: length" in status
    assert len({n for n in growth if 0 < n < 300}) >= 10, growth[:50]  # it arrived piece by piece
    # Each token shows what the server said of it: the same text and log-probabilities as the API's own answer.
    body = tab.last_post("/v1/completions")
    assert body["logprobs"] == 5 and body["seed"] == 7 and body["stream"] is True
    expected = call(server, "/v1/completions", json.dumps(body | {"stream": False}).encode())[1]["choices"][0]
    assert completion == expected["text"]
    shown = page.evaluate("tokens")
    assert [t["logprob"] for t in shown] == pytest.approx(expected["logprobs"]["token_logprobs"])
    shades = page.eval_on_selector_all("#output .tok", "spans => spans.map(s => s.className)")
    assert len(shades) == 300
    for token, shade in zip(shown, shades, strict=True):
        assert shade.replace(" nl", "").split() == ["tok", *filter(None, [legend(math.exp(token["logprob"]))])]
    # The steps themselves, at their edges (a tiny random model's probabilities are all small).
    edges = [0.0, 0.099, 0.1, 0.299, 0.3, 0.499, 0.5, 0.699, 0.7, 0.899, 0.9, 1.0]
    assert page.evaluate(f"{edges}.map(shade)") == [legend(p) for p in edges]
    # Hover over a token: its probability and the likeliest alternatives, the chosen one marked.
    page.hover(".tok[data-index='10']")
    tooltip = page.locator("#tooltip")
    assert tooltip.is_visible()
    alternatives = expected["logprobs"]["top_logprobs"][10]
    assert tooltip.locator("tr").count() == len(alternatives) >= 5
    chosen = completion[10].replace(" ", "␣").replace("\n", "↵")
    assert tooltip.locator("tr.chosen td").first.text_content() == chosen
    assert f"{100 * math.exp(expected['logprobs']['token_logprobs'][10]):.1f} %" in tooltip.text_content()
    # The keyboard reaches the same: focus the text, step with the arrows, and the screen reader hears it.
    page.focus("#output")
    page.keyboard.press("End")
    assert page.text_content("#inspector").startswith(completion[-1].replace(" ", "␣").replace("\n", "↵"))
    screenshot = tmp_path / "playground.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot: {screenshot}")
    tab.check_clean()


def test_stop_ends_the_stream_and_the_server_frees_its_rows(tab, server):
    page = tab.page
    page.fill("#max_tokens", "1000")
    tab.throttle(8_000)  # about 30 tokens a second
    page.click("#generate")
    page.wait_for_function("document.getElementById('completion').textContent.length >= 20")
    assert page.is_enabled("#stop-button") and page.is_disabled("#generate")
    page.click("#stop-button")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('stopped after')")
    shown = len(page.text_content("#completion"))
    assert 20 <= shown < 1000 and f"stopped after {shown} tokens" == page.text_content("#status")
    assert page.is_enabled("#generate") and page.is_disabled("#stop-button")
    assert wait_until(lambda: _active_sequences(server) == 0, 5), "the server still decodes the stopped stream"
    tab.check_clean()


def test_chat_mode_talks_on_the_releases_chat_template(tab, server):
    page = tab.page
    page.check("input[name=mode][value=chat]")
    assert page.is_visible("#message") and not page.is_visible("#prompt")
    page.fill("#message", "What light through yonder window breaks?")
    page.fill("#max_tokens", "40")
    page.fill("#seed", "5")
    status = tab.generate()
    assert "finish reason" in status
    first = tab.last_post("/v1/chat/completions")
    assert first["messages"] == [{"role": "user", "content": "What light through yonder window breaks?"}]
    assert first["logprobs"] is True and first["top_logprobs"] == 5
    # The reply is the server's own answer to the same request: the chat endpoint, on the release's template.
    expected = call(server, "/v1/chat/completions", json.dumps(first | {"stream": False}).encode())[1]
    reply = expected["choices"][0]["message"]["content"]
    assert page.text_content("#completion") == reply and len(page.eval_on_selector_all("#completion .tok", "s => s"))
    # The next turn carries the conversation so far.
    page.fill("#system", "A garden at night.")
    page.fill("#message", "Good night!")
    tab.generate()
    second = tab.last_post("/v1/chat/completions")
    assert second["messages"] == [
        {"role": "system", "content": "A garden at night."},
        {"role": "user", "content": "What light through yonder window breaks?"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "Good night!"},
    ]
    assert page.locator("#output .turn").count() == 4
    page.click("#clear")
    assert page.locator("#output .turn").count() == 0
    tab.check_clean()


def test_every_control_is_sent_under_its_openai_or_vllm_name(tab, server):
    """What the page sends, control by control, and the server takes (what it does with each: test_sampling_controls.py
    and test_structured_output.py; the page showing it: the next test)."""
    page = tab.page
    controls = {"temperature": "0.5", "max_tokens": "30", "min_tokens": "4", "top_p": "0.9", "top_k": "20",
                "min_p": "0.05", "presence_penalty": "0.5", "frequency_penalty": "-0.5", "repetition_penalty": "1.2",
                "seed": "11"}  # fmt: skip
    for name, value in controls.items():
        page.fill(f"#{name}", value)
    page.fill("#stop", "\\n\\n\nthe end")
    page.fill("#logit_bias", '{"e": -100, "\\n": 5.5}')
    ids = call(server, "/tokenize", json.dumps({"prompt": "e\n"}).encode())[1]["tokens"]
    formats = {
        "regex": ("[A-Z][a-z]+", {"structured_outputs": {"regex": "[A-Z][a-z]+"}}),
        "choice": ("yes\nno\n", {"structured_outputs": {"choice": ["yes", "no"]}}),
        "json_schema": (
            '{"type": "object", "properties": {"name": {"type": "string"}}}',
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "playground",
                        "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
                    },
                }
            },
        ),
        "json_object": (None, {"response_format": {"type": "json_object"}}),
    }
    sampling = {name: float(value) if "." in value else int(value) for name, value in controls.items()}
    assert "tokens in" in tab.generate()  # the server took it
    assert tab.last_post("/v1/completions") == {
        "model": "char-transformer",
        "stream": True,
        **sampling,
        "stop": ["\n\n", "the end"],
        "logit_bias": {str(ids[0]): -100, str(ids[1]): 5.5},
        "prompt": "ROMEO:\n",
        "logprobs": 5,
    }
    page.fill("#stop", "")  # a grammar says where its text ends: the server refuses stop strings beside one
    for kind, (spec, fields) in formats.items():
        page.select_option("#format", kind)
        if spec is not None:
            page.fill("#format_spec", spec)
        status = tab.generate()
        assert "tokens in" in status, status
        body = tab.last_post("/v1/completions")
        expected = {"model": "char-transformer", "stream": True, **sampling, **fields, "prompt": "ROMEO:\n"}
        assert body == expected | {"logit_bias": {str(ids[0]): -100, str(ids[1]): 5.5}, "logprobs": 5}
        assert json.loads(page.text_content("#request").split("\n", 1)[1]) == body  # shown as sent, to copy
    tab.check_clean()


def test_the_text_obeys_the_bias_and_the_constraint_set_on_the_page(tab):
    page = tab.page
    page.fill("#temperature", "2")  # the flattest the API allows: every character likely enough to appear
    page.fill("#max_tokens", "300")
    page.fill("#seed", "1")
    tab.generate()
    assert "e" in page.text_content("#completion")
    page.fill("#logit_bias", '{"e": -100}')
    tab.generate()
    assert "e" not in page.text_content("#completion") and len(page.text_content("#completion")) == 300
    page.fill("#logit_bias", "")
    page.fill("#temperature", "1")
    page.fill("#max_tokens", "60")
    # Constraints in characters the tiny release has (TEXT's and JSON's: no "p", so no "speaker").
    line = r"[A-Z][a-z]{2,6}( [a-z]{2,6}){2}\?"
    for kind, spec, check in [
        ("regex", line, lambda text: re.fullmatch(line, text)),
        ("choice", "ROMEO\nBut soft\nyonder window", lambda text: text in ("ROMEO", "But soft", "yonder window")),
        ("json_schema", json.dumps(SCHEMA), lambda text: json.loads(text)["who"] in ("ROMEO", "BOB")),
    ]:
        page.select_option("#format", kind)
        page.fill("#format_spec", spec)
        status = tab.generate()
        text = page.text_content("#completion")
        assert "finish reason: stop" in status and check(text), (kind, text, status)
    tab.check_clean()


SCHEMA = {
    "type": "object",
    "properties": {"who": {"enum": ["ROMEO", "BOB"]}, "line": {"type": "string", "maxLength": 12}},
    "required": ["who", "line"],
    "additionalProperties": False,
}


def test_mistakes_are_named_on_the_page(tab):
    page = tab.page
    # The server's own 400, in OpenAI's shape: its message and the parameter it is about.
    page.fill("#temperature", "5")
    status = tab.generate()
    assert "the server answered 400" in status and "temperature" in status and "less than or equal to 2" in status
    assert page.locator("#status .error").is_visible()
    page.fill("#temperature", "0.8")
    # What the page can tell before asking: nothing is sent.
    posts = len(tab.posts)
    for field, value, message in [
        ("#logit_bias", "{e: -100}", "logit bias: not JSON"),
        ("#logit_bias", '{"ab": 1}', 'logit bias: "ab" must be one character'),
    ]:
        page.fill(field, value)
        assert message in tab.generate()
    page.fill("#logit_bias", "")
    page.select_option("#format", "json_schema")
    page.fill("#format_spec", "{not json")
    assert "the JSON schema is not JSON" in tab.generate()
    assert len(tab.posts) == posts
    # A character the model has never seen cannot be biased.
    page.select_option("#format", "")
    page.fill("#logit_bias", '{"€": -100}')
    assert '"€" is not in the model\'s vocabulary' in tab.generate()
    tab.check_clean(400)


def test_a_server_that_went_away_is_named(browser, release_dir):
    process, url = start_server(release_dir)
    tab = Tab(browser, url)
    try:
        page = tab.open().page
        process.kill()
        process.wait()
        status = tab.generate()
        assert "the server did not answer" in status and "is it running?" in status
        assert page.is_enabled("#generate") and page.locator("#status .error").is_visible()
        tab.check_clean("net::ERR_CONNECTION_REFUSED")
    finally:
        tab.context.close()
        process.kill()
        process.wait()


def test_the_api_key_is_asked_for_kept_for_the_tab_and_sent(browser, release_dir):
    """A server with API keys: the page asks for one, says when it is refused, sends the right one as a Bearer
    header with every request, keeps it across a reload of the tab but not in another tab, and shows a 401 clearly."""
    process, url = start_server(release_dir, "--api-key", "playground-key")
    tab = Tab(browser, url)
    page = tab.page
    try:
        page.goto(url + "/")
        page.wait_for_selector("#key-panel:not([hidden])")
        assert "401" in page.text_content("#release")
        assert page.evaluate("document.activeElement.id") == "api-key"
        page.fill("#api-key", "not-the-key")
        page.click("#key-form button[type=submit]")
        page.wait_for_function("document.getElementById('key-message').textContent.includes('not valid')")
        assert page.get_attribute("#key-message", "class") == "error" and page.is_visible("#key-panel")
        page.fill("#api-key", "playground-key")
        page.click("#key-form button[type=submit]")
        page.wait_for_function("document.getElementById('release').textContent.includes('release 2026')")
        assert page.is_hidden("#key-panel")
        sent = []
        page.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/v1/" in r.url else None)
        page.fill("#max_tokens", "20")
        assert "20 tokens" in tab.generate()
        assert sent and set(sent) == {"Bearer playground-key"}
        assert "playground-key" not in page.text_content("#request")  # the request shown leaves the key out
        # Kept for this tab: a reload keeps it, another tab asks again.
        page.reload()
        page.wait_for_function("document.getElementById('release').textContent.includes('release 2026')")
        other = tab.context.new_page()
        other.goto(url + "/")
        other.wait_for_selector("#key-panel:not([hidden])")
        # Without a key, a generation's 401 is said plainly, and the key is asked for.
        page.click("#forget-key")
        page.wait_for_selector("#key-panel:not([hidden])")
        status = tab.generate()
        assert "the server answered 401" in status and "Enter an API key" in status
        tab.check_clean(401)
    finally:
        tab.context.close()
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def docs(browser, server):
    """Swagger UI at /docs, loaded once for the tests below (each works in its own operation's block)."""
    page = browser.new_page()
    requests_outside = []
    page.on("request", lambda r: None if r.url.startswith(server) else requests_outside.append(r.url))
    page.goto(server + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20000)
    yield page, requests_outside
    page.close()


def test_the_docs_page_renders_offline(docs):
    page, requests_outside = docs
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
def test_swaggers_try_it_out_succeeds_with_its_own_example(docs, tag, operation):
    page, _ = docs
    block = page.locator(f"#operations-{tag}-{operation}")
    block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=20000)
    body = block.locator(".live-responses-table tbody .microlight").first.text_content()
    assert status.text_content().strip() == "200", body
    assert json.loads(body)  # the answer shown is JSON

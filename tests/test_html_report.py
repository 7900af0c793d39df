"""The HTML report in a real headless browser: Chromium from the system packages (installed here when
missing and this process may install it), driven over the DevTools protocol on a pipe."""

import base64
import io
import json
import os
import shutil
import subprocess
import time

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(command, check=False, capture_output=True, timeout=900,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("no Chromium, and it cannot be installed here (apt-get install chromium as root)")
    return found


class DevTools:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (file descriptors 3
    and 4, NUL-terminated JSON): enough to load a page, evaluate script and take a screenshot."""

    def __init__(self, executable: str, profile):
        to_browser, self._commands = os.pipe()
        self._events, from_browser = os.pipe()
        arguments = [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                     f"--user-data-dir={profile}", "--window-size=1280,2000", "about:blank"]
        # bash puts the pipes on descriptors 3 and 4 (dash takes one-digit descriptors only; no preexec_fn:
        # this process runs JAX's threads).
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser} 4>&{from_browser}', "bash", *map(str, arguments)],
            pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser), os.close(from_browser)
        self._buffer, self._next_id, self.messages = b"", 0, []

    def send(self, method: str, session: str | None = None, timeout: float = 60, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        reply = self.wait(lambda m: m.get("id") == self._next_id, timeout)
        assert "error" not in reply, reply
        return reply["result"]

    def wait(self, matches, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if matches(message):
                    self.messages.remove(message)
                    return message
            chunk = os.read(self._events, 1 << 20)
            assert chunk, "Chromium closed the pipe"
            self._buffer += chunk
            *whole, self._buffer = self._buffer.split(b"\0")
            self.messages += [json.loads(w) for w in whole if w]
        raise TimeoutError("no DevTools reply in time")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def load(browser: str, page, profile) -> dict:
    """Opens ``page`` in a fresh tab; returns what it logged, its images, its accessibility facts and a
    screenshot."""
    tools = DevTools(browser, profile)
    try:
        target = tools.send("Target.createTarget", url="about:blank")["targetId"]
        session = tools.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            tools.send(domain, session)
        tools.send("Page.navigate", session, url=page.as_uri())
        tools.wait(lambda m: m.get("method") == "Page.loadEventFired", 60)
        check = """JSON.stringify({
            images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
            tables: [...document.querySelectorAll('table')].map(t => ({
                caption: !!t.querySelector('caption'), headers: t.querySelectorAll('thead th[scope=col]').length,
                columns: t.querySelector('tbody tr') ? t.querySelector('tbody tr').children.length : 0})),
            lang: document.documentElement.lang, title: document.title,
            headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
            scripts: document.scripts.length, text: document.body.innerText})"""
        facts = json.loads(tools.send("Runtime.evaluate", session, expression=check)["result"]["value"])
        shot = tools.send("Page.captureScreenshot", session, format="png")["data"]
        errors = [m for m in tools.messages if m.get("method") == "Runtime.exceptionThrown"
                  or m.get("method") == "Runtime.consoleAPICalled" and m["params"]["type"] == "error"
                  or m.get("method") == "Log.entryAdded" and m["params"]["entry"]["level"] == "error"]
        return {**facts, "errors": errors, "screenshot": base64.b64decode(shot)}
    finally:
        tools.close()


@pytest.mark.system
def test_the_html_report_loads_offline_with_every_figure_and_accessible_tables(browser, write_spec, cli, workdir):
    import matplotlib.image
    from tests.conftest import TINY_SPEC

    spec = write_spec(TINY_SPEC.replace("seeds = 2\n", 'seeds = 3\ncompare = ["placement=pre,none"]\n'))
    assert cli("sweep", spec).exit_code == 0
    folder = workdir / "results" / "tiny"
    page = folder / "report.html"
    figures = sorted(p.name for p in folder.glob("*.png"))
    assert page.exists() and figures
    facts = load(browser, page, workdir / "profile")
    assert facts["errors"] == []
    assert facts["scripts"] == 0 and facts["lang"] == "en" and facts["title"] == "bnbench report: tiny"
    assert facts["headings"][:5] == ["Question", "Verdicts", "Summary", "Comparisons", "Figures"]
    assert "Provenance" in facts["headings"]
    # Every figure the sweep wrote is on the page, decoded, with alt text; the comparison's paired
    # differences first, beside the verdicts they rest on.
    assert len(facts["images"]) == len(figures) and "paired_placement_pre_vs_none.png" in figures
    assert facts["images"][0]["alt"] == "figure paired placement pre vs none"
    assert all(i["complete"] and i["width"] > 0 and i["alt"].startswith("figure ") for i in facts["images"])
    # Every table has a caption and a header cell per column.
    assert facts["tables"] and all(t["caption"] and t["headers"] == t["columns"] for t in facts["tables"])
    text = facts["text"]
    assert "placement=pre minus none" in text and "verdict (epsilon=" in text and "bnbench sweep" in text
    pixels = matplotlib.image.imread(io.BytesIO(facts["screenshot"]), format="png")
    assert pixels.shape[0] > 500 and pixels[..., :3].std() > 0.05  # not a blank page


@pytest.mark.integration
def test_report_html_needs_no_network_and_is_written_whole(tiny_results, cli, workdir):
    folder = tiny_results
    page = folder / "report.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "No figures were written (--no-plots)" in text
    # the provenance shows an empty cell where runs.csv's is empty (a built-in model's model_source)
    assert "<td>nan</td>" not in text and "<td></td>" in text.split("<h2>Provenance</h2>")[1]
    missing = cli("report", folder, "--html", workdir / "nowhere" / "r.html", "--no-plots")
    assert missing.exit_code == 1 and "cannot write" in missing.stderr and "Traceback" not in missing.stderr
    assert not (workdir / "nowhere").exists()

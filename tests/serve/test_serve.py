"""contrastkit serve: the JSON API on image, text and recommendation runs, its security (paths
out of the run folder, uploads, write methods, Host names), the command line around it, and
the page itself in a real headless Chromium (one browser for the module, one live server per
run). Each run is trained once, in-process, for the module."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")
pytest.importorskip("faiss")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing from a hub
pytest.importorskip("transformers")

from contrastkit.cli import main
from contrastkit.serve import MAX_UPLOAD, create_app

from ..conftest import tiny_overrides
from ..recsys_helpers import tiny_sets, write_tiny_movielens
from ..text_helpers import quick_runs, tiny_clip_sets, tiny_text_sets, write_text_data

PNG = b"\x89PNG\r\n\x1a\n"
SECRET = "top secret, outside the run"


# ----------------------------------------------------------------------------- tiny runs


@pytest.fixture(scope="module", autouse=True)
def _quick_runs() -> Iterator[None]:
    with quick_runs():
        yield


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def image_run(root: Path) -> Path:
    run = root / "image"
    sets = [x for pair in tiny_overrides(**{"train.max_steps": 1}) for x in ("--set", pair)]
    assert main(["train", *sets, "--out", str(run), "--no-eval", "--quiet"]) == 0
    return run


@pytest.fixture(scope="module")
def indexed_image_run(root: Path, image_run: Path) -> Path:
    run = shutil.copytree(image_run, root / "image-indexed")
    assert main(["index", str(run), "--data", "digits:test", "--kind", "flat"]) == 0
    return run


@pytest.fixture(scope="module")
def text_run(root: Path) -> tuple[Path, list[str]]:
    paths = write_text_data(root / "text-data", n=300)
    run = root / "text"
    sets = tiny_text_sets(paths, **{"train.max_steps": 4, "train.checkpoint_every": 4})
    assert main(["train", *sets, "--out", str(run), "--no-eval", "--quiet"]) == 0
    assert main(["index", str(run), "--data", str(paths["corpus"])]) == 0
    return run, paths["corpus"].read_text().splitlines()


@pytest.fixture(scope="module")
def clip_run(root: Path) -> Path:
    run = root / "clip"
    assert main(["train", *tiny_clip_sets(), "--out", str(run), "--no-eval", "--quiet"]) == 0
    assert main(["index", str(run), "--data", "digits:test"]) == 0
    return run


@pytest.fixture(scope="module")
def recsys_run(root: Path) -> Path:
    run = root / "recsys"
    sets = tiny_sets(write_tiny_movielens(root / "ml"), **{"train.epochs": 2})
    assert main(["train", "ml100k-mf", "--out", str(run), *sets, "--quiet"]) == 0
    return run


@pytest.fixture(scope="module")
def query_png(root: Path) -> Path:
    """Test image 11 of digits as a PNG file, as a user would upload it."""
    from PIL import Image

    from contrastkit.data.image import load_image_dataset

    path = root / "digit-11.png"
    Image.fromarray(load_image_dataset("digits", "test").images[11, 0].numpy()).save(path)
    return path


@pytest.fixture(scope="module")
def image_app(image_run: Path) -> Any:
    return create_app(image_run)


@pytest.fixture(scope="module")
def text_app(text_run: tuple[Path, list[str]]) -> Any:
    return create_app(text_run[0])


@pytest.fixture(scope="module")
def recsys_app(recsys_run: Path) -> Any:
    return create_app(recsys_run)


def upload(client: Any, data: bytes, url: str = "/api/search-image?k=3") -> Any:
    import io

    return client.post(url, data={"image": (io.BytesIO(data), "q.png")}, content_type="multipart/form-data")


# ----------------------------------------------------------------------------- the API per kind of run


def test_image_run_without_index_browses_test_images(image_app: Any, query_png: Path) -> None:
    client = image_app.test_client()
    info = client.get("/api/info").get_json()
    assert info["task"] == "image" and info["search"]["modalities"] == ["image"]
    assert [ix["name"] for ix in info["search"]["indexes"]] == ["digits:test (in memory)"]
    gallery = info["gallery"]
    assert gallery["count"] == 360 and len(gallery["labels"]) == 360 and gallery["url"] == "/image/0/"
    image = client.get("/image/0/11")
    assert image.status_code == 200 and image.mimetype == "image/png" and image.data.startswith(PNG)
    for url in ("/image/0/360", "/image/1/0", "/image/0/-1"):
        assert client.get(url).status_code == 404, url

    near = client.get("/api/neighbours/11?k=5").get_json()
    assert near["query"]["name"] == "digits:test#11" and len(near["hits"]) == 5
    assert "digits:test#11" not in [h["name"] for h in near["hits"]]  # the image itself left out
    scores = [h["score"] for h in near["hits"]]
    assert scores == sorted(scores, reverse=True) and all(h["image"].startswith("/image/0/") for h in near["hits"])
    assert client.get("/api/neighbours/360").status_code == 404

    hits = upload(client, query_png.read_bytes()).get_json()["hits"]
    assert hits[0]["name"] == "digits:test#11" and hits[0]["score"] > 0.999
    answer = client.get("/api/search?q=a+seven")
    assert answer.status_code == 400 and "searched with images" in answer.get_json()["error"]


def test_image_run_with_index_searches_it(indexed_image_run: Path, query_png: Path) -> None:
    client = create_app(indexed_image_run).test_client()
    info = client.get("/api/info").get_json()
    assert [ix["name"] for ix in info["search"]["indexes"]] == ["digits-test"] and info["gallery"]["count"] == 360
    hits = upload(client, query_png.read_bytes(), "/api/search-image?index=digits-test&k=3").get_json()["hits"]
    assert hits[0]["name"] == "digits:test#11" and hits[0]["image"] == "/image/0/11"
    near = client.get("/api/neighbours/3?k=4").get_json()
    assert near["index"] == "digits-test" and len(near["hits"]) == 4
    assert "digits:test#3" not in [h["name"] for h in near["hits"]]
    assert client.get("/api/neighbours/3?index=nope").status_code == 404


def test_text_run_with_index(text_app: Any, text_run: tuple[Path, list[str]], query_png: Path) -> None:
    client = text_app.test_client()
    _, sentences = text_run
    info = client.get("/api/info").get_json()
    assert info["search"]["modalities"] == ["text"] and info["gallery"] is None and info["recommend"] is None
    long_name = client.get("/api/search", query_string={"q": "a" * 300 + ".png"})
    assert long_name.status_code == 200, long_name.get_json()  # a text, even if it ends like a file name
    answer = client.get("/api/search", query_string={"q": sentences[5], "k": 3}).get_json()
    assert answer["index"] == "corpus" and len(answer["hits"]) == 3
    assert answer["hits"][0]["text"] == sentences[5] and answer["hits"][0]["score"] > 0.999
    for query, code, message in (
        ({"q": "  "}, 400, "1 to 1000 characters"),
        ({"q": "x" * 1001}, 400, "1 to 1000 characters"),
        ({"q": str(query_png)}, 400, "may not name an image file"),  # the page never reads server files
        ({"q": "a cat", "k": "0"}, 400, "k must be from 1 to 100"),
        ({"q": "a cat", "k": "ten"}, 400, "whole number"),
        ({"q": "a cat", "index": "other"}, 404, "no index 'other'"),
    ):
        response = client.get("/api/search", query_string=query)
        assert response.status_code == code and message in response.get_json()["error"], query
    assert "searched with text" in upload(client, query_png.read_bytes()).get_json()["error"]
    assert client.get("/api/neighbours/0").status_code == 404
    assert client.get("/api/recommend/1").status_code == 404


def test_image_text_run_searches_images_with_text_or_an_image(clip_run: Path, query_png: Path) -> None:
    client = create_app(clip_run).test_client()
    info = client.get("/api/info").get_json()
    assert info["search"]["modalities"] == ["text", "image"] and info["gallery"]["count"] == 360
    hits = client.get("/api/search?q=a+photo+of+a+7&k=4").get_json()["hits"]
    assert len(hits) == 4 and all(h["image"].startswith("/image/0/") and "label" in h for h in hits)
    hits = upload(client, query_png.read_bytes()).get_json()["hits"]
    assert hits[0]["name"] == "digits:test#11" and hits[0]["score"] > 0.999
    assert client.get(hits[1]["image"]).data.startswith(PNG)


def test_recsys_run_history_and_recommendations(recsys_app: Any, recsys_run: Path) -> None:
    client = recsys_app.test_client()
    info = client.get("/api/info").get_json()
    assert info["search"] is None and info["recommend"]["users"] == 40 and info["recommend"]["sample"][0] == "1"
    answer = client.get("/api/recommend/3?k=5").get_json()
    history = {row["name"] for row in answer["history"]}
    assert answer["history_count"] == len(history) > 0 and all(r["text"].startswith("Movie ") for r in answer["history"])
    recommended = [row["name"] for row in answer["recommendations"]]
    assert len(recommended) == 5 and not history & set(recommended)
    missing = client.get("/api/recommend/999")
    assert missing.status_code == 404 and "unknown user id '999'" in missing.get_json()["error"]
    assert client.get("/api/users?q=1").get_json() == ["1", *(str(i) for i in range(10, 20))]
    assert client.get("/api/search?q=x").status_code == 404  # no index here


# ----------------------------------------------------------------------------- security


@pytest.fixture(scope="module")
def leaky_run(root: Path, recsys_run: Path) -> Path:
    """A copy of the recsys run with links out of it, and a secret next to it."""
    run = shutil.copytree(recsys_run, root / "leaky" / "run")
    outside = root / "leaky" / "outside"
    outside.mkdir()
    for path in (root / "leaky" / "secret.txt", outside / "secret.png", outside / "secret.txt"):
        path.write_text(SECRET)
    (run / "leak.txt").symlink_to(root / "leaky" / "secret.txt")
    (run / "outdir").symlink_to(outside, target_is_directory=True)
    return run


TRAVERSALS = [
    "/file/../secret.txt",
    "/file/..%2fsecret.txt",
    "/file/%2e%2e/secret.txt",
    "/file/%2e%2e%2fsecret.txt",
    "/file/%252e%252e%252fsecret.txt",
    "/file/data/../../secret.txt",
    "/file/data/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/file/..%5csecret.txt",
    f"/file/{'..%2f' * 12}etc/passwd",
    "/file//etc/passwd",
    "/file/%2fetc%2fpasswd",
    "/file/leak.txt",  # a link out of the run folder
    "/file/outdir/secret.png",  # a folder link out of it
    "/file/outdir/secret.txt",
    "/file/config.yaml%00.png",
    "/file/checkpoints/last.pt",  # inside, but not a kind of file the page shows
]


def test_files_only_from_inside_the_run_folder(leaky_run: Path) -> None:
    client = create_app(leaky_run).test_client()
    ok = client.get("/file/config.yaml")
    assert ok.status_code == 200 and ok.mimetype == "text/plain" and b"task: recsys" in ok.data
    assert client.get("/file/data/ids.json").status_code == 200
    assert "leak.txt" not in client.get("/api/info").get_json()["files"]
    for url in TRAVERSALS:
        response = client.get(url, follow_redirects=True)  # "//" redirects to "/" (werkzeug)
        assert response.status_code in (403, 404), url
        assert SECRET.encode() not in response.data and b"root:" not in response.data, url


def test_uploads_are_bounded_images(image_app: Any) -> None:
    client = image_app.test_client()
    big = upload(client, PNG + b"\0" * MAX_UPLOAD)
    assert big.status_code == 413 and big.get_json()["error"] == "upload too large: at most 5 MB"
    for data, message in (
        (b"hello, not an image", "not an image"),
        (b"%PDF-1.4 ...", "not an image"),
        (b"", "not an image"),
        (PNG + b"garbage", "cannot read query image"),
    ):
        response = upload(client, data)
        assert response.status_code == 400 and message in response.get_json()["error"], data
    missing = client.post("/api/search-image", data={"file": "x"})
    assert missing.status_code == 400 and "form field 'image'" in missing.get_json()["error"]


def test_no_write_methods_and_loopback_hosts_only(image_app: Any) -> None:
    client = image_app.test_client()
    for url in ("/", "/api/info", "/api/search?q=x", "/api/neighbours/0", "/api/recommend/1", "/image/0/0",
                "/file/config.yaml", "/api/users"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert client.open(url, method=method).status_code == 405, (method, url)
    for method in ("GET", "PUT", "DELETE"):
        assert client.open("/api/search-image", method=method).status_code == 405, method
    assert client.get("/api/info", headers={"Host": "evil.example:8765"}).status_code == 400  # DNS rebinding
    assert client.get("/api/info", headers={"Host": "127.0.0.1:8765"}).status_code == 200
    page = client.get("/")
    csp = page.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and f'<script nonce="{nonce.group(1)}">' in page.text and "default-src 'none'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["X-Frame-Options"] == "DENY"
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from outside


# ----------------------------------------------------------------------------- the command line


def test_cli_mistakes_are_one_line(
    tmp_path: Path, recsys_run: Path, text_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    no_index = shutil.copytree(text_run[0], tmp_path / "no-index", ignore=shutil.ignore_patterns("index"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for argv, message in (
            (["serve", str(tmp_path / "nope"), "--port", "0"], "does not exist"),
            (["serve", str(tmp_path), "--port", "0"], "not a contrastkit run folder"),
            (["serve", str(no_index), "--port", "0"], "nothing to explore: no index, test images or recommendations; build "
                f"one with: contrastkit index {no_index}"),
            (["serve", str(recsys_run), "--port", "70000"], "--port must be from 0 to 65535"),
            (["serve", str(recsys_run), "--port", str(port)], f"cannot serve on 127.0.0.1 port {port}"),
        ):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err.strip()
            assert message in err and len(err.splitlines()) == 1, err


def test_cli_serves_until_ctrl_c(recsys_run: Path) -> None:
    """`contrastkit serve RUN --port P` as a command (the docs' serve commands count on this
    test): it answers on a real socket until Ctrl-C, then exits 0, quietly. A process of its
    own: exiting the interpreter after Ctrl-C is part of what is checked."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "contrastkit", "serve", str(recsys_run), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=30)
        conn.request("GET", "/")
        page = conn.getresponse()
        assert page.status == 200 and b"contrastkit" in page.read()
        conn.request("GET", "/file/../../../etc/passwd")  # sent as written: http.client does not normalise
        assert conn.getresponse().status == 404
        proc.send_signal(signal.SIGINT)  # the connection stays open, as a browser's would
        rest, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and not rest.strip() and "Traceback" not in err, (proc.returncode, rest, err)  # quiet


# ----------------------------------------------------------------------------- in a real browser


class Pages:
    """Headless Chromium and one live server per app (started when first asked for): ``open``
    an app's page and wait until its script is ready."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.servers: dict[int, tuple[Any, threading.Thread]] = {}

    def url(self, app: Any) -> str:
        from werkzeug.serving import make_server

        if id(app) not in self.servers:
            server = make_server("127.0.0.1", 0, app, threaded=True)
            server.daemon_threads = False  # close() joins the request threads: none outlives the module
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self.servers[id(app)] = (server, thread)
        return f"http://127.0.0.1:{self.servers[id(app)][0].port}/"

    def open(self, app: Any) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(self.url(app))
        wait = WebDriverWait(self.driver, 30)
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        return wait

    def close(self) -> None:
        self.driver.quit()  # first: its keep-alive connections end, so their threads can be joined
        for server, thread in self.servers.values():
            server.shutdown()
            server.server_close()
            thread.join(10)


@pytest.fixture(scope="module")
def pages() -> Iterator[Pages]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("browser tests need chromium and chromedriver on PATH (make chromium)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    # the system chromedriver, named: Selenium Manager never runs (it would download one)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    out = Pages(driver)
    try:
        yield out
    finally:
        out.close()


def first_hits(browser: Any, list_id: str = "results") -> list[str]:
    return [li.get_attribute("data-name") for li in browser.find_elements("css selector", f"#{list_id} li")]


def test_browser_text_query(pages: Pages, text_app: Any, text_run: tuple[Path, list[str]]) -> None:
    sentence = text_run[1][7]
    browser, wait = pages.driver, pages.open(text_app)
    assert browser.find_element("id", "drop").is_displayed() is False
    browser.find_element("id", "q").send_keys(sentence)
    browser.find_element("id", "search-btn").click()
    wait.until(lambda d: first_hits(d)[:1] == [sentence])
    first = browser.find_element("css selector", "#results li")
    assert first.find_element("css selector", ".score").text == "1.0000"
    assert len(first_hits(browser)) == 10


def test_browser_image_upload_and_gallery(pages: Pages, image_app: Any, query_png: Path) -> None:
    browser, wait = pages.driver, pages.open(image_app)
    assert browser.find_element("id", "text-form").is_displayed() is False
    browser.find_element("id", "upload").send_keys(str(query_png))
    wait.until(lambda d: first_hits(d)[:1] == ["digits:test#11"])

    thumbs = browser.find_elements("css selector", "#gallery img")
    assert len(thumbs) == 150  # the first page of the 360 test images
    assert browser.execute_script("return arguments[0].naturalWidth", thumbs[7]) == 8  # decoded PNG
    thumbs[7].click()
    wait.until(lambda d: "digits:test#7" in d.find_element("id", "query").text and len(first_hits(d)) == 10)
    assert "digits:test#7" not in first_hits(browser)
    assert "sel" in (thumbs[7].get_attribute("class") or "")
    browser.find_element("id", "more").click()
    assert len(browser.find_elements("css selector", "#gallery img")) == 300


def test_browser_recommendations(pages: Pages, recsys_app: Any) -> None:
    browser, wait = pages.driver, pages.open(recsys_app)
    assert browser.find_element("id", "search").is_displayed() is False
    browser.find_element("id", "user").send_keys("3")
    browser.find_element("id", "recommend-btn").click()
    wait.until(lambda d: len(first_hits(d, "recs")) == 10)
    history = browser.find_element("id", "history").text
    assert "Movie " in history and not set(first_hits(browser, "recs")) & set(first_hits(browser, "history"))
    browser.find_element("id", "user").clear()
    browser.find_element("id", "user").send_keys("nobody")
    browser.find_element("id", "recommend-btn").click()
    wait.until(lambda d: "unknown user id 'nobody'" in d.find_element("id", "user-status").text)

"""The web side of ``contrastkit serve``: a Flask app over an :class:`Explorer` (JSON API, the
page, images and files, all read-only) and the local server around it.

Security: binds to 127.0.0.1 unless told otherwise, and then answers only requests addressed to
a loopback name (no DNS rebinding); no route writes anything; uploads are bounded
(``MAX_UPLOAD``, 413) and must be images (400); files come only from inside the run folder;
every response forbids framing and MIME sniffing, and the page runs only its own inline script
(a per-response nonce) and talks only to this server.
"""

from __future__ import annotations

import ipaddress
import secrets
import signal
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contrastkit.data.image.decode import IMAGE_SUFFIXES
from contrastkit.errors import UserError, install_hint
from contrastkit.serve.explorer import Explorer, NotFound

if TYPE_CHECKING:
    from flask import Flask

MAX_UPLOAD = 5 * 1024 * 1024
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "::1", "[::1]"]
PAGE_CSP = (
    "default-src 'none'; script-src 'nonce-{n}'; style-src 'nonce-{n}'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; img-src 'self'; frame-ancestors 'none'"


def require_flask() -> None:
    try:
        import flask  # noqa: F401
    except ImportError:
        raise UserError(f"contrastkit serve needs flask: {install_hint('serve')}") from None


def create_app(
    run_dir: str | Path, *, trusted_hosts: list[str] | None = LOOPBACK_HOSTS, explorer: Explorer | None = None
) -> Flask:
    """The app for one run folder (``trusted_hosts``: the Host names it answers; None: any)."""
    require_flask()
    from flask import Flask, Response, jsonify, request, send_file
    from werkzeug.exceptions import HTTPException

    from contrastkit.serve.page import PAGE

    ex = explorer or Explorer(run_dir)
    app = Flask("contrastkit.serve", static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=MAX_UPLOAD, TRUSTED_HOSTS=trusted_hosts)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    def k_arg() -> int:
        raw = request.args.get("k", "10")
        if not raw.isdigit():
            raise UserError(f"k must be a whole number, got {raw!r}")
        return int(raw)

    @app.get("/")
    def page() -> Response:
        nonce = secrets.token_urlsafe(16)
        response = Response(PAGE.replace("__NONCE__", nonce), mimetype="text/html")
        response.headers["Content-Security-Policy"] = PAGE_CSP.format(n=nonce)
        return response

    @app.get("/api/info")
    def info() -> Any:
        return {**ex.info(), "max_upload": MAX_UPLOAD}

    @app.get("/api/search")
    def search() -> Any:
        return ex.search_text(request.args.get("q", ""), request.args.get("index"), k_arg())

    @app.post("/api/search-image")
    def search_image() -> Any:
        upload = request.files.get("image")
        if upload is None:
            raise UserError("send the image as the form field 'image' (multipart/form-data)")
        return ex.search_image(upload.read(MAX_UPLOAD + 1), request.args.get("index"), k_arg())

    @app.get("/api/neighbours/<int:i>")
    def neighbours(i: int) -> Any:
        return ex.neighbours(i, request.args.get("index"), k_arg())

    @app.get("/api/users")
    def users() -> Any:
        return jsonify(ex.users(request.args.get("q", "")))

    @app.get("/api/recommend/<path:user>")
    def recommend(user: str) -> Any:
        return ex.recommend(user, k_arg())

    @app.get("/image/<int:source>/<int:i>")
    def image(source: int, i: int) -> Response:
        response = Response(ex.image_png(source, i), mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    @app.get("/file/<path:relative>")
    def file(relative: str) -> Any:
        path = ex.resolve_file(relative)
        if path is None:
            raise NotFound(f"no file {relative!r} in the run folder")
        image = path.suffix.lower() in IMAGE_SUFFIXES
        return send_file(path, mimetype=None if image else "text/plain; charset=utf-8", max_age=0)

    @app.errorhandler(UserError)
    def user_error(exc: UserError) -> Any:
        return {"error": str(exc)}, 404 if isinstance(exc, NotFound) else 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"upload too large: at most {MAX_UPLOAD // (1024 * 1024)} MB"
        return {"error": message}, exc.code

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", API_CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Ctrl-C (and SIGTERM) stop the server, even where the shell started it with SIGINT ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, interrupt)
    try:
        yield
    finally:
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8765) -> int:
    """Serve the explorer of a run until Ctrl-C (0, quietly, also during start-up)."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be from 0 to 65535 (0: any free port), got {port}")
    require_flask()
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    bare = host.strip("[]")
    try:  # bound first, and here: werkzeug would exit the process on a port in use
        sock = socket.create_server((bare, port), family=socket.AF_INET6 if ":" in bare else socket.AF_INET)
    except OSError as exc:
        raise UserError(f"cannot serve on {host} port {port}: {exc.strerror or exc}") from None
    with sock, _stop_on_signals():
        try:
            loopback = is_loopback(bare)
            explorer = Explorer(run_dir, log=print)
            app = create_app(run_dir, trusted_hosts=LOOPBACK_HOSTS if loopback else None, explorer=explorer)
            server = make_server(bare, port, app, threaded=True, request_handler=QuietHandler, fd=sock.fileno())
            if not loopback:
                warnings.warn(f"serving on {host}: anyone who can reach it can read this run", stacklevel=1)
            shown = f"[{bare}]" if ":" in bare else bare
            print(f"serving {run_dir} at http://{shown}:{server.port}/ (Ctrl-C to stop)", flush=True)
            server.serve_forever()  # werkzeug's returns on Ctrl-C and closes the server
        except KeyboardInterrupt:
            pass
    return 0

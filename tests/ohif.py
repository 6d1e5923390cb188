"""The OHIF viewer (the prebuilt ``dist/`` of the npm package ``@ohif/app``, pinned) for browser
tests: fetched once into ``.cache/ohif/<version>/dist`` and served on 127.0.0.1 together with a
same-origin proxy of ``/dicom-web/*`` to Orthanc's DICOMweb plugin.

``npm install @ohif/app`` fails (a dependency version is missing from the registry), and the
viewer needs none of its dependencies: ``npm pack`` downloads the package tarball alone, whose
sha512 is checked against :data:`INTEGRITY` before anything is unpacked.

Standard library only, so that ``python3 tests/ohif.py fetch`` (``make ohif``) runs before the
project's virtual environment exists.
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import shutil
import sys
import tarfile
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from npm_pack import pack

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
#: ``npm view @ohif/app@3.13.2 dist.integrity``: the tarball must hash to this.
INTEGRITY = (
    "sha512-"
    "WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
)
REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "ohif" / VERSION
#: Written into the cache after a complete unpack: a half-unpacked dist is never used.
STAMP = "complete"
#: The proxied DICOMweb root, on the viewer's origin.
DICOMWEB = "/dicom-web"

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml",
    ".onnx": "application/octet-stream",
}
#: Upstream response headers the proxy hands on (hop-by-hop ones are not among them).
_PASS_HEADERS = ("content-type", "content-encoding", "etag", "last-modified", "cache-control")
_CHUNK = 256 * 1024


def dist_dir(cache: Path = CACHE) -> Path | None:
    """The unpacked ``dist/`` of the pinned version, or None while it has not been fetched."""
    dist = cache / "dist"
    if (cache / STAMP).is_file() and (dist / "index.html").is_file():
        return dist
    return None


def fetch(cache: Path = CACHE, npm: str | None = None) -> Path:
    """Download (``npm pack``), check and unpack the pinned package's ``dist/``; idempotent."""
    done = dist_dir(cache)
    if done is not None:
        return done
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="fetch-") as tmp:
        work = Path(tmp)
        tarball = pack(PACKAGE, VERSION, INTEGRITY, work, npm)
        unpacked = work / "unpacked"
        with tarfile.open(tarball, "r:gz") as tar:
            members = [_checked(m) for m in tar.getmembers() if m.name.startswith("package/dist/")]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(unpacked, members=members, filter="data")
            else:  # Debian 12's Python 3.11.2 predates extraction filters: _checked did it
                tar.extractall(unpacked, members=members)
        if not (unpacked / "package" / "dist" / "index.html").is_file():
            raise RuntimeError(f"{tarball.name} holds no package/dist/index.html")
        shutil.rmtree(cache / "dist", ignore_errors=True)
        (unpacked / "package" / "dist").rename(cache / "dist")
    (cache / STAMP).write_text(f"{PACKAGE}@{VERSION} {INTEGRITY}\n")
    return cache / "dist"


def _checked(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Only plain files and folders, inside the destination (what the "data" filter allows)."""
    parts = Path(member.name).parts
    if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in parts:
        raise RuntimeError(f"refusing tarball member {member.name!r}")
    member.mode = 0o755 if member.isdir() else 0o644
    return member


def app_config() -> str:
    """``app-config.js``: one DICOMweb data source, the proxy on the viewer's own origin."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "dicomweb",
        "configuration": {
            "friendlyName": "Orthanc (xrayd test PACS)",
            "name": "orthanc",
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True},
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "showErrorDetails": "always",
        "defaultDataSourceName": "dicomweb",
        "dataSources": [source],
    }
    return (
        "// written by xrayd's tests/ohif.py: the test PACS behind a same-origin proxy\n"
        f"window.config = {json.dumps(config, indent=2)};\n"
        "(function (origin) {\n"
        "  const c = window.config.dataSources[0].configuration;\n"
        f"  c.qidoRoot = c.wadoRoot = c.wadoUriRoot = origin + {json.dumps(DICOMWEB)};\n"
        "})(window.location.origin);\n"
        "// the first-visit tour of the viewer would cover the viewport: count it as shown\n"
        "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));\n"
    )


class OhifServer(ThreadingHTTPServer):
    """The viewer's files (SPA fallback to ``index.html``) and ``/dicom-web/*`` proxied to
    ``http://127.0.0.1:<orthanc_port><orthanc_root>``. Requests it could not answer (404 of a
    file, upstream failure) are kept in :attr:`problems`."""

    daemon_threads = True

    def __init__(self, dist: Path, orthanc_port: int, orthanc_root: str = "/dicom-web") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.dist = dist.resolve()
        self.orthanc_port = orthanc_port
        self.orthanc_root = orthanc_root.rstrip("/")
        self.config_js = app_config().encode()
        self.problems: list[str] = []
        self.proxied = 0
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> OhifServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="ohif-http")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    server: OhifServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _route(self, *, head: bool) -> None:
        path = urlsplit(self.path).path
        if path == DICOMWEB or path.startswith(DICOMWEB + "/"):
            self._proxy(head=head)
        elif path == "/app-config.js":
            self._send(HTTPStatus.OK, _TYPES[".js"], self.server.config_js, head=head)
        else:
            self._static(path, head=head)

    # --- the viewer's files ------------------------------------------------------------------

    def _static(self, path: str, *, head: bool) -> None:
        dist = self.server.dist
        target = (dist / path.lstrip("/")).resolve()
        if not target.is_relative_to(dist):
            self._send(HTTPStatus.FORBIDDEN, "text/plain", b"outside the viewer", head=head)
            return
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            if "." in path.rsplit("/", 1)[-1]:  # a missing file, not a route of the app
                self.server.problems.append(f"404 {self.path}")
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found", head=head)
                return
            target = dist / "index.html"  # /viewer, /viewer/dicomweb, ...: the SPA's routes
        ctype = _TYPES.get(target.suffix) or (
            mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        )
        size = target.stat().st_size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(size))
        self.send_header("Cache-Control", "no-cache")
        self._isolation_headers()
        self.end_headers()
        if not head:
            with target.open("rb") as f:
                shutil.copyfileobj(f, self.wfile, _CHUNK)

    def _isolation_headers(self) -> None:
        # cross-origin isolated: cornerstone may use SharedArrayBuffer (everything is same-origin)
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")

    def _send(self, status: int, ctype: str, body: bytes, *, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self._isolation_headers()
        self.end_headers()
        if not head:
            self.wfile.write(body)

    # --- the same-origin proxy to Orthanc --------------------------------------------------------

    def _proxy(self, *, head: bool) -> None:
        server = self.server
        upstream_path = server.orthanc_root + self.path[len(DICOMWEB) :]
        headers = {
            name: value
            for name in ("Accept", "Accept-Encoding", "Range")
            if (value := self.headers.get(name)) is not None
        }
        conn = http.client.HTTPConnection("127.0.0.1", server.orthanc_port, timeout=60)
        try:
            conn.request("HEAD" if head else "GET", upstream_path, headers=headers)
            response = conn.getresponse()
        except OSError as exc:
            conn.close()
            server.problems.append(f"proxy {self.path}: {type(exc).__name__}: {exc}")
            self._send(HTTPStatus.BAD_GATEWAY, "text/plain", b"Orthanc unreachable", head=head)
            return
        try:
            server.proxied += 1
            if response.status >= 400:
                server.problems.append(f"{response.status} from Orthanc for {self.path}")
            self.send_response(response.status)
            for name in _PASS_HEADERS:
                if (value := response.getheader(name)) is not None:
                    self.send_header(name, value)
            self._isolation_headers()
            length = response.getheader("content-length")
            chunked = length is None and not head
            if length is not None:
                self.send_header("Content-Length", length)
            elif chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if head:
                return
            while block := response.read1(_CHUNK):  # stream: never the whole body in memory
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                else:
                    self.wfile.write(block)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            conn.close()


def main(argv: list[str]) -> int:
    if argv[1:] == ["fetch"]:
        fetched = fetch()
        print(f"{PACKAGE}@{VERSION}: {fetched.relative_to(REPO)} ({INTEGRITY[:19]}... checked)")
        return 0
    if argv[1:] == ["path"]:
        dist = dist_dir()
        print(dist or "")
        return 0 if dist else 1
    print(f"usage: {argv[0]} fetch|path", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

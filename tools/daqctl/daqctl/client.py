"""Host: one daqd server's HTTP API (docs/OPERATIONS.md), standard library only.

A Host is a value (url, token file, tag, output_dir) plus the calls daqctl
makes; it keeps no connection between calls, so one Host may be used from
several threads at once (Cluster does, one thread per host).

Every failure is a HostError whose message starts with the host's tag and
URL and says what went wrong: refused connection, timeout, an HTTP status
with daqd's own "error" text, or an answer that is not JSON.

Rationale: requests go through http.client rather than urllib so that a
two-phase commit can open the TCP connection first and send the request at a
barrier: the commits of all hosts then leave within microseconds of each
other, and what remains of the start skew is the servers' own work.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
DEFAULT_TIMEOUT_S = 10.0


class DaqctlError(RuntimeError):
    """A failure daqctl reports (exit status 1): the message says what and where."""


class HostError(DaqctlError):
    """A request to one daqd failed. ``host`` is its tag, ``status`` the HTTP status (None: no answer)."""

    def __init__(self, host: "Host", what: str, status: int | None = None, body=None):
        super().__init__(f"host {host.tag} ({host.url}): {what}")
        self.host = host.tag
        self.status = status
        self.body = body


def name_safe(text: str) -> str:
    """text with every character outside A-Za-z0-9._- replaced by '-' (a run-name-safe host tag)."""
    s = re.sub(r"[^A-Za-z0-9._-]", "-", text).strip("-")
    return s or "host"


@dataclass
class Host:
    """One daqd. ``tag`` names its files in a multi-host run (``<run>_<tag>.h5``);
    ``output_dir`` is where those files are as seen from this machine (None:
    ask daqd, which is right when daqctl runs on the same machine or the
    directory is mounted at the same path)."""

    url: str
    token_file: str | None = None
    tag: str | None = None
    output_dir: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    _token: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        u = urllib.parse.urlsplit(self.url if "://" in self.url else "http://" + self.url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise DaqctlError(f"{self.url!r}: not an http:// URL of a daqd")
        self.url = f"{u.scheme}://{u.netloc}{u.path.rstrip('/')}"
        self._scheme, self._hostname, self._port, self._base = u.scheme, u.hostname, u.port, u.path.rstrip("/")
        if self.tag is None:
            self.tag = name_safe(u.hostname)
        elif not NAME_RE.match(self.tag):
            raise DaqctlError(f"host tag {self.tag!r} ({self.url}): only A-Za-z0-9._- are allowed")

    # ---- low level -----------------------------------------------------------

    def token(self) -> str:
        if self._token is None:
            if not self.token_file:
                raise HostError(self, "this request needs the API token: give token_file (--token-file)")
            try:
                with open(self.token_file, encoding="utf-8") as f:
                    tok = f.read().strip()
            except OSError as e:
                raise HostError(self, f"cannot read token file {self.token_file}: {e.strerror}") from None
            if not tok:
                raise HostError(self, f"token file {self.token_file} is empty")
            self._token = tok
        return self._token

    def _connection(self):
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return cls(self._hostname, self._port, timeout=self.timeout)

    def request(self, method: str, path: str, body=None, *, auth=False, ok=(200, 201), barrier=None):
        """(status, JSON answer, monotonic time the answer arrived). With a
        threading.Barrier, the connection is opened first and the request
        sent once every party reached the barrier."""
        conn = self._connection()
        try:
            try:
                headers = {"Accept": "application/json"}
                data = None
                if body is not None:
                    data = json.dumps(body).encode()
                    headers["Content-Type"] = "application/json"
                if auth:
                    headers["Authorization"] = f"Bearer {self.token()}"
                conn.connect()
            except OSError as e:
                raise HostError(self, f"unreachable: {_why(e)}") from None
            finally:
                if barrier is not None:  # reached on every path: the other hosts' requests wait for it
                    try:
                        barrier.wait()
                    except threading.BrokenBarrierError:
                        pass
            try:
                conn.request(method, self._base + path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                at = time.monotonic()
            except (OSError, http.client.HTTPException) as e:
                raise HostError(self, f"{method} {path}: no answer: {_why(e)}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise HostError(self, f"{method} {path}: HTTP {resp.status}, answer is not JSON: {raw[:200]!r}",
                            resp.status) from None
        if resp.status not in ok:
            msg = answer.get("error") if isinstance(answer, dict) else None
            raise HostError(self, f"{method} {path}: HTTP {resp.status}: {msg if msg else repr(raw[:200])}", resp.status, answer)
        return resp.status, answer, at

    # ---- the API -------------------------------------------------------------

    def status(self) -> dict:
        return self.request("GET", "/api/v1/status")[1]

    def runs(self) -> dict:
        return self.request("GET", "/api/v1/runs")[1]

    def run_info(self, name: str) -> dict:
        return self.request("GET", f"/api/v1/runs/{urllib.parse.quote(name)}")[1]

    def start(self, name: str | None, *, meta=None, host_tag=None, prepare=False, prepare_timeout_s=None,
              compression=None) -> dict:
        """POST /api/v1/runs. host_tag: the tag daqd puts into the file name
        (multi-host runs); prepare: only prepare (answer state "prepared")."""
        body = {}
        if name is not None:
            body["name"] = name
        if host_tag is not None:
            body["host"] = host_tag
        if meta:
            body["meta"] = dict(meta)
        if prepare:
            body["prepare"] = True
            if prepare_timeout_s is not None:
                body["prepare_timeout_s"] = prepare_timeout_s
        if compression is not None:
            body["compression"] = compression
        return self.request("POST", "/api/v1/runs", body, auth=True)[1]

    def commit(self, name: str, barrier=None):
        """(answer, monotonic time of the answer)."""
        _, answer, at = self.request("POST", "/api/v1/runs/commit", {"name": name}, auth=True, barrier=barrier)
        return answer, at

    def abort(self, name: str) -> dict:
        return self.request("POST", "/api/v1/runs/abort", {"name": name}, auth=True)[1]

    def stop(self) -> dict:
        return self.request("POST", "/api/v1/runs/stop", auth=True)[1]

    def files_dir(self) -> str:
        """Where this host's run files are, as seen from here."""
        if self.output_dir is not None:
            return self.output_dir
        return self.status()["output_dir"]


def _why(e: BaseException) -> str:
    if isinstance(e, socket.timeout) or isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


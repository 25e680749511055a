"""A local stand-in for the official weights server: files served over HTTP on 127.0.0.1, requests counted.

Point hiera_video at it with `monkeypatch.setenv(BASE_URL_ENV, server.url)` and keep downloads in a temporary
torch hub cache (`use_temporary_hub`), so a test never touches the network or the user's cache.
"""
from __future__ import annotations

import collections
import io
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

CHUNK = 64 * 1024


def checkpoint_bytes(model: torch.nn.Module) -> bytes:
    """`model` saved as the official files are: torch.save({"model_state": state_dict})."""
    buffer = io.BytesIO()
    torch.save({"model_state": model.state_dict()}, buffer)
    return buffer.getvalue()


def use_temporary_hub(monkeypatch, folder) -> str:
    """Makes torch.hub.get_dir() a folder under `folder` ($TORCH_HOME); returns the checkpoint cache in it."""
    monkeypatch.setenv("TORCH_HOME", str(folder))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # torch.hub.set_dir would win over TORCH_HOME
    return os.path.join(str(folder), "hub", "checkpoints")


class WeightsServer:
    """Serves `files` (name -> bytes) at `url`, counting GET requests per name in `requests`.

    `cut_after`: send only that many bytes of a body (announcing its full length), then close the connection.
    `chunk_delay`: seconds to wait after every 64 KiB chunk (a slow link).
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.requests: collections.Counter[str] = collections.Counter()
        self.cut_after: int | None = None
        self.chunk_delay = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                owner.requests[name] += 1
                body = owner.files.get(name)
                if body is None:
                    self.send_error(404, f"no file {name}")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                sent = body if owner.cut_after is None else body[:owner.cut_after]
                try:
                    for start in range(0, len(sent), CHUNK):
                        self.wfile.write(sent[start:start + CHUNK])
                        self.wfile.flush()
                        time.sleep(owner.chunk_delay)
                except (BrokenPipeError, ConnectionResetError):  # the client went away (killed)
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

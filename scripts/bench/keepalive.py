"""One keep-alive HTTP connection for the benchmark generators
(gcfill.py, scalefill.py): reconnects when the server closes it, and
retries a request that found no connection or was refused with 429 or 503.

Owns only its connection; never talks to anything but the address given.
"""

import http.client
import time


class KeepAlive:
    def __init__(self, host, port, retries):
        self.host, self.port, self.retries = host, port, retries
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        """(status, body bytes, response) of the first answer that is not a
        429 or 503, after at most `retries` tries."""
        for attempt in range(self.retries):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                time.sleep(0.05 * (attempt + 1))
                continue
            if resp.getheader("connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            if resp.status in (429, 503):
                time.sleep(0.05 * (attempt + 1))
                continue
            return resp.status, data, resp
        raise RuntimeError(f"{method} {path}: no answer after {self.retries} tries")

"""A scripted browser for a tenant's admin console over real HTTP: it keeps the cookies the
console sets and reads the CSRF token of the last page, as a browser's form would send it."""

import http.client
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

CSRF_FIELD = re.compile(rb'name="csrf_token" value="([^"]+)"')
ERROR = re.compile(rb'<p id="error" role="alert">([^<]*)</p>')
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; Set-Cookie lines joined by "\n"
    body: bytes

    @property
    def error(self) -> str:
        """The sentence a page shows in its error paragraph ("" if none)."""
        found = ERROR.search(self.body)
        return found.group(1).decode() if found else ""


class AdminClient:
    """Talks over the connections `connect` makes (to a workload's socket directly, or HTTPS
    through the edge) as Host `host`."""

    def __init__(
        self,
        connect: Callable[[], http.client.HTTPConnection],
        host: str,
        forwarded_for: str | None = None,
    ) -> None:
        self.connect = connect
        self.host = host
        self.forwarded_for = forwarded_for
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def send(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        accept: str = "text/html",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = {"Host": self.host, "Accept": accept, **(headers or {})}
        if self.forwarded_for:
            sent["X-Forwarded-For"] = self.forwarded_for
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
            body = urlencode(form).encode()
        conn = self.connect()
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read()
            set_cookies = response.headers.get_all("Set-Cookie") or []
            headers_seen = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        headers_seen["set-cookie"] = "\n".join(set_cookies)
        for cookie in set_cookies:
            name, _, value = cookie.split(";")[0].partition("=")
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        found = CSRF_FIELD.search(data)
        if found:
            self.csrf = found.group(1).decode()
        return Reply(response.status, headers_seen, data)

    def post(self, path: str, **fields: str) -> Reply:
        """A form as the page last shown would send it, with its CSRF token."""
        return self.send("POST", path, {"csrf_token": self.csrf, **fields})

    def check_code(self, email: str, code: str) -> Reply:
        self.send("GET", "/admin/invitation")
        return self.post("/admin/invitation", email=email, code=code)

    def redeem(self, email: str, code: str, password: str = PASSWORD) -> Reply:
        """The first visit: the code, then the password; a 303 to /admin when it worked."""
        checked = self.check_code(email, code)
        if checked.status != 200:
            return checked
        fields = {"email": email, "code": code, "password": password, "confirm": password}
        return self.post("/admin/password", **fields)

    def sign_in(self, email: str, password: str = PASSWORD) -> Reply:
        self.send("GET", "/admin/sign-in")
        return self.post("/admin/sign-in", email=email, password=password)

"""The pages of a tenant's admin console and its sign-in: plain HTML, no script, no style.

Every value is HTML-escaped here. The element ids and the words are what the browser tests
look for. A page never carries the invitation code in a link: only the password form holds it,
in a hidden field that goes back in a POST body.
"""

from html import escape

ERROR = '<p id="error" role="alert">{}</p>'
NOTICE = '<p id="notice" role="status">{}</p>'


def _layout(title: str, body: str) -> bytes:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title></head><body>{body}</body></html>"
    ).encode()


def _message(error: str | None, notice: str | None = None) -> str:
    return (ERROR.format(escape(error)) if error else "") + (
        NOTICE.format(escape(notice)) if notice else ""
    )


def _field(name: str, label: str, kind: str, value: str = "", extra: str = "") -> str:
    return (
        f'<p><label for="{name}">{label}</label><br><input id="{name}" name="{name}"'
        f' type="{kind}" value="{escape(value)}" required {extra}></p>'
    )


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{escape(value)}">'


def sign_in_page(
    tenant_key: str, csrf: str, email: str = "", error: str | None = None, notice: str | None = None
) -> bytes:
    body = (
        f"<h1>Sign in to the admin console of {escape(tenant_key)}</h1>{_message(error, notice)}"
        '<form method="post" action="/admin/sign-in">'
        + _hidden("csrf_token", csrf)
        + _field("email", "Email address", "email", email, 'autocomplete="username"')
        + _field("password", "Password", "password", extra='autocomplete="current-password"')
        + '<p><button type="submit">Sign in</button></p></form>'
        '<p>First visit? <a id="redeem" href="/admin/invitation">Redeem your invitation</a>'
        " with the code from your welcome email.</p>"
    )
    return _layout(f"Sign in: {tenant_key}", body)


def invitation_page(tenant_key: str, csrf: str, email: str = "", error: str | None = None) -> bytes:
    body = (
        f"<h1>Redeem your invitation to {escape(tenant_key)}</h1>{_message(error)}"
        "<p>Enter your email address and paste the invitation code from the email"
        f" &ldquo;Your admin console for {escape(tenant_key)}&rdquo;. The code works once.</p>"
        '<form method="post" action="/admin/invitation">'
        + _hidden("csrf_token", csrf)
        + _field("email", "Email address", "email", email, 'autocomplete="username"')
        + _field("code", "Invitation code", "text", extra='autocomplete="off" spellcheck="false"')
        + '<p><button type="submit">Continue</button></p></form>'
        '<p>Already set your password? <a href="/admin/sign-in">Sign in</a>.</p>'
    )
    return _layout(f"Redeem your invitation: {tenant_key}", body)


def password_page(
    tenant_key: str, csrf: str, email: str, code: str, min_chars: int, error: str | None = None
) -> bytes:
    length = f'minlength="{min_chars}" autocomplete="new-password"'
    body = (
        f"<h1>Choose your password for {escape(tenant_key)}</h1>{_message(error)}"
        f"<p>Your invitation is valid. Choose a password of at least {min_chars} characters:"
        " from now on you sign in with it and your email address.</p>"
        '<form method="post" action="/admin/password">'
        + _hidden("csrf_token", csrf)
        + _hidden("email", email)
        + _hidden("code", code)
        + _field("password", "New password", "password", extra=length)
        + _field("confirm", "New password again", "password", extra=length)
        + '<p><button type="submit">Set password and sign in</button></p></form>'
    )
    return _layout(f"Choose your password: {tenant_key}", body)


def console_page(tenant_key: str, issuer: str, users: str, email: str, csrf: str) -> bytes:
    key = escape(tenant_key)
    body = (
        f"<h1>Admin console: {key}</h1>"
        f'<p id="signed-in-as">Signed in as {escape(email)}</p>'
        f'<p>Issuer: {escape(issuer)}</p><p id="users">{escape(users)}</p>'
        '<form method="post" action="/admin/sign-out">'
        + _hidden("csrf_token", csrf)
        + '<button type="submit">Sign out</button></form>'
    )
    return _layout(f"{tenant_key} admin console", body)

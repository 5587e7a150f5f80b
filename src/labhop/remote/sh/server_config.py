# Written by labhop into this one server's private configuration directory (its state
# directory's config/, listed first in JUPYTER_CONFIG_PATH): the user's own ~/.jupyter and
# the env's files are read as always, after it. See labhop's README, "Security".
#
# Who gets in: labhop itself, with the server's token (../token, sent only in headers, never
# in a URL), and each browser that a labhop attached to this server gave a token of its own.
# A browser token lives in ../tokens/ (file name: the first 32 hex digits of its SHA-256)
# exactly as long as that labhop holds the local port it went out on. A login cookie names
# the token it was issued under and dies with it. The page a browser loads carries only its
# own token: the IdentityProvider's `token`, which Jupyter puts into pages, opens nothing.
import hashlib
import hmac
import json
import os
import secrets

from jupyter_server.auth.identity import PasswordIdentityProvider

_HERE = os.path.dirname(os.path.abspath(__file__))
_STATE = os.path.dirname(_HERE)
_TOKENS = os.path.join(_STATE, "tokens")
_PASSWORD = "password"  # the name a cookie from the user's own Jupyter password carries

# Kernels and terminals inherit the server's environment: they get the user's own config
# path, without this directory, and never the server's token.
_rest = [p for p in os.environ.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep)
         if p and os.path.abspath(p) != _HERE]
if _rest:
    os.environ["JUPYTER_CONFIG_PATH"] = os.pathsep.join(_rest)
else:
    os.environ.pop("JUPYTER_CONFIG_PATH", None)
os.environ.pop("JUPYTER_TOKEN", None)


def _read(path):
    try:
        with open(path) as file:
            return file.read()
    except (OSError, ValueError):
        return ""


_SERVER_TOKEN = _read(os.path.join(_STATE, "token"))


def _name(token):
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _browser_token(name):
    """The browser token filed under `name`, or "" when there is none (any more)."""
    if len(name) != 32 or not all(ch in "0123456789abcdef" for ch in name):
        return ""
    return _read(os.path.join(_TOKENS, name))


def _page_config_hook(handler, page_config):
    """The page's API token: the browser's own, never the server's (empty for a cookie
    that names none: the page then goes by its cookie)."""
    page_config["token"] = _browser_token(getattr(handler, "_labhop_token_name", "")
                                          or getattr(handler, "_labhop_cookie_name", ""))
    return page_config


def _chain(hook, previous):
    if previous is None:
        return hook

    def chained(handler, page_config):
        return hook(handler, previous(handler, page_config))
    chained.labhop = True
    return chained


class LabhopTokens(PasswordIdentityProvider):
    """The server's token, or a browser token that its labhop still holds a port for."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # What Jupyter compares with and writes into its pages: a value no request can use
        # (get_token turns it away), so a page that shows it gives nothing away.
        self.token = secrets.token_hex(32)
        self.token_generated = False
        # labhop gives the browser tokens of its own once it sees this.
        with open(os.path.join(_STATE, ".auth"), "w") as file:
            file.write("sessions\n")
        os.replace(os.path.join(_STATE, ".auth"), os.path.join(_STATE, "auth"))

    def _token_name(self, presented):
        """The name of the token `presented` matches, or "" when it matches none."""
        if not presented:
            return ""
        name = _name(presented)
        if _SERVER_TOKEN and hmac.compare_digest(presented, _SERVER_TOKEN):
            return name
        known = _browser_token(name)
        return name if known and hmac.compare_digest(presented, known) else ""

    def _still_valid(self, name):
        if name == _PASSWORD:
            return bool(self.hashed_password)
        return bool(name) and (name == _name(_SERVER_TOKEN) or bool(_browser_token(name)))

    def get_user(self, handler):
        hook = handler.settings.get("page_config_hook")
        if not getattr(hook, "labhop", False) and hook is not _page_config_hook:
            handler.settings["page_config_hook"] = _chain(_page_config_hook, hook)
        return super().get_user(handler)

    def get_token(self, handler):
        presented = super().get_token(handler) or ""
        name = self._token_name(presented)
        handler._labhop_token_name = name
        # Jupyter compares what this returns with self.token: only a token we know gets in.
        return self.token if name else ""

    def get_user_cookie(self, handler):
        # user_from_cookie, below, is not given the handler; tornado runs one at a time.
        handler._labhop_cookie_name = ""
        self._cookie_handler = handler
        try:
            return super().get_user_cookie(handler)
        finally:
            self._cookie_handler = None

    def process_login_form(self, handler):
        typed = handler.get_argument("password", default="")
        name = self._token_name(typed)
        if name:
            handler._labhop_token_name = name
            return self.generate_anonymous_user(handler)
        if self.hashed_password and self.passwd_check(typed):
            handler._labhop_token_name = _PASSWORD
            return self.generate_anonymous_user(handler)
        return None

    def set_login_cookie(self, handler, user):
        self._cookie_token_name = getattr(handler, "_labhop_token_name", "")
        try:
            super().set_login_cookie(handler, user)
        finally:
            self._cookie_token_name = ""

    def user_to_cookie(self, user):
        return json.dumps({"labhop_token": getattr(self, "_cookie_token_name", ""),
                           "user": super().user_to_cookie(user)})

    def user_from_cookie(self, cookie_value):
        value = json.loads(cookie_value)
        name, user = value["labhop_token"], value["user"]
        if not isinstance(user, str) or not self._still_valid(name):
            return None
        handler = getattr(self, "_cookie_handler", None)
        if handler is not None:
            handler._labhop_cookie_name = name
        return super().user_from_cookie(user)


c = get_config()  # noqa: F821 -- given by traitlets to a config file
c.ServerApp.identity_provider_class = LabhopTokens

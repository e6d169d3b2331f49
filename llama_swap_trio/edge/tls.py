"""TLS on the listener (SPEC 6.1 ``tls_cert_file``/``tls_key_file``, ``--tls-cert``/``--tls-key``).

One function builds the server's :class:`ssl.SSLContext` from a certificate chain and its key; the
config check calls it too, so a file that cannot be read, or a key that does not match the
certificate, is found when the config is loaded (a config error, exit 2), not on the first client.

The context offers HTTP/2 and HTTP/1.1 by ALPN, since TLS connections are served by hypercorn
(edge/server.py), which speaks both.
"""

from __future__ import annotations

import ssl

#: what a TLS client may pick by ALPN (hypercorn serves both)
ALPN_PROTOCOLS = ["h2", "http/1.1"]


class TLSFileError(Exception):
    """The certificate or key cannot be used; the message says why.

    Attributes:
        which: ``"cert"`` or ``"key"``: the file at fault (the key when they do not match).
    """

    def __init__(self, message: str, which: str) -> None:
        super().__init__(message)
        self.which = which


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server-side TLS context serving ``cert_file`` (PEM chain) with ``key_file`` (PEM key).

    Raises:
        TLSFileError: a file is unreadable or not PEM, or the key does not match the certificate.
    """
    for what, which, path in (("certificate", "cert", cert_file), ("key", "key", key_file)):
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as exc:
            raise TLSFileError(
                f"cannot read the {what} file {path!r}: {exc.strerror or exc}", which
            ) from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    # No passphrase prompt in a daemon: an encrypted key fails to load instead of blocking.
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(exc) or reason == "KEY_VALUES_MISMATCH":
            raise TLSFileError(
                f"the key in {key_file!r} does not match the certificate in {cert_file!r}", "key"
            ) from None
        raise TLSFileError(
            f"cannot load the certificate {cert_file!r} with the key {key_file!r} ({reason})",
            "cert",
        ) from None
    return context


def _no_passphrase() -> str:
    raise TLSFileError("the key is encrypted; give an unencrypted key file", "key")

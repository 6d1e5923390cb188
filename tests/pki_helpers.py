"""A throwaway PKI for TLS tests, made with the openssl command-line tool."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed EC CA: (certificate, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    openssl(
        "req", "-x509", "-new", "-nodes", "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", key, "-out", cert,
        "-days", "2", "-subj", f"/CN=xrayd test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def make_leaf(
    directory: Path,
    name: str,
    ca: tuple[Path, Path],
    *,
    san: str = "DNS:localhost,IP:127.0.0.1",
    usage: str = "serverAuth,clientAuth",
    serial: int | None = None,
) -> tuple[Path, Path]:
    """A certificate signed by ``ca`` for the names in ``san``: (certificate, key)."""
    cert, key, csr, ext = (directory / f"{name}{e}" for e in (".pem", ".key", ".csr", ".ext"))
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\n"
        f"subjectAltName={san}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    openssl(
        "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
    )  # fmt: skip
    serial_args = ("-set_serial", str(serial)) if serial is not None else ("-CAcreateserial",)
    openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], *serial_args,
        "-days", "2", "-out", cert, "-extfile", ext,
    )  # fmt: skip
    return cert, key

"""skopeo, which copies an image to a registry: found once, one method per operation.

The CLI finds it (:meth:`Skopeo.find`) before any work, when it is asked to push, and
hands it the image layout :func:`lockbox.image.oci.make_image` wrote. A registry's answers
are hostile input like any other: a push counts only when the registry then gives back the
manifest pushed, and a failed skopeo run is read for its cause (a timeout, refused
credentials, a registry that speaks plain HTTP) and raised as an
:class:`~lockbox.errors.ImageError` that says what to do.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lockbox.errors import ImageError, ToolFailed
from lockbox.progress import Progress, silent
from lockbox.tools.run import run, which

REGISTRY_TIMEOUT = 300.0
"""Seconds each skopeo command talking to a registry may take, unless told otherwise."""


@dataclass(frozen=True)
class Skopeo:
    """skopeo, which pushes images to registries and reads back what they keep."""

    executable: Path
    """The skopeo program found on ``PATH``."""

    @classmethod
    def find(cls, path: str | None = None) -> Skopeo:
        """skopeo on ``path`` (the environment's ``PATH``), or
        :class:`~lockbox.errors.ToolMissing` saying how to install it."""
        return cls(
            which(
                "skopeo",
                "install skopeo (Debian: apt-get install skopeo); lockbox pushes images with it",
                path,
            )
        )

    def push(
        self,
        layout: Path,
        tag: str,
        reference: str,
        digest: str,
        *,
        authfile: Path | None = None,
        tls_verify: bool = True,
        timeout: float = REGISTRY_TIMEOUT,
        progress: Progress = silent,
    ) -> None:
        """Copy the image ``tag`` of the OCI layout ``layout`` to ``reference``
        (``registry/repository:tag``), then read back the manifest the registry now gives
        for ``reference`` and check that it is the one pushed (its sha256 is ``digest``): a
        registry that answers without keeping the image is found out here. Credentials come
        from ``authfile`` or the usual docker/podman auth files. Each skopeo command is
        stopped after ``timeout`` seconds."""
        destination = f"docker://{reference.removeprefix('docker://')}"
        argv: list[str | os.PathLike[str]] = ["copy", "--quiet"]
        if authfile is not None:
            argv += ["--dest-authfile", authfile]
        argv += [
            f"--dest-tls-verify={'true' if tls_verify else 'false'}",
            f"oci:{layout}:{tag}",
            destination,
        ]
        self._run(argv, reference, "pushing to", timeout, progress)
        argv = ["inspect", "--raw"]
        if authfile is not None:
            argv += ["--authfile", authfile]
        argv += [f"--tls-verify={'true' if tls_verify else 'false'}", destination]
        raw = self._run(argv, reference, "reading back the manifest of", timeout, progress)
        got = f"sha256:{hashlib.sha256(raw.encode()).hexdigest()}"
        if got != digest:
            raise ImageError(
                f"the registry of {reference} did not keep the image pushed: it "
                f"answers with a manifest whose digest is {got}, expected {digest}\n"
                "check the registry (and that nothing else pushes to this tag), "
                "then push again"
            )

    def _run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        reference: str,
        doing: str,
        timeout: float,
        progress: Progress,
    ) -> str:
        # skopeo's own timeout lets it report where it was; lockbox's own, a little later,
        # holds if skopeo does not stop.
        try:
            return run(
                [self.executable, "--command-timeout", f"{timeout:g}s", *argv],
                progress=progress,
                timeout=timeout + 10,
            ).stdout
        except ToolFailed as error:
            text = error.stderr.strip().splitlines()[-1] if error.stderr.strip() else str(error)
            lowered = text.lower()
            if error.returncode == -9 or "context deadline exceeded" in lowered:
                raise ImageError(
                    f"{doing} {reference} took longer than {timeout:g} s: the "
                    f"registry does not answer ({text})\ncheck the registry's "
                    "address, or allow longer with --timeout SECONDS"
                ) from None
            if "unauthorized" in lowered or "authentication required" in lowered:
                raise ImageError(
                    f"the registry refused the credentials for {reference}: {text}\n"
                    "log in first (`skopeo login REGISTRY`) or pass --authfile "
                    "with a docker/podman auth file"
                ) from None
            if "http response to https client" in lowered:
                raise ImageError(
                    f"{reference}: the registry speaks plain HTTP; pass "
                    "--no-tls-verify if that is intended"
                ) from None
            raise ImageError(f"{doing} {reference} failed: {text}") from None

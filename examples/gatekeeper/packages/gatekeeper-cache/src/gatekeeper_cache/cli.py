"""The `gatekeeper-cache-info` console script: which distribution is installed."""

from importlib.metadata import version

DISTRIBUTION = "gatekeeper-cache"


def main() -> int:
    # Read from the installed metadata, so it proves the dist-info is present.
    print(DISTRIBUTION, version(DISTRIBUTION))
    return 0

"""The `gatekeeper-guardian-check` console script: which distribution is installed."""

from importlib.metadata import version

DISTRIBUTION = "gatekeeper-guardian"


def main() -> int:
    # Read from the installed metadata, so it proves the dist-info is present.
    print(DISTRIBUTION, version(DISTRIBUTION))
    return 0

"""gatekeeper: a miniature identity service, the example lockbox builds."""

__version__ = "0.1.0"

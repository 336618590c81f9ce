from django.apps import AppConfig


# Minimal app config: enough for INSTALLED_APPS, no models yet.
class GatekeeperGuardianConfig(AppConfig):
    name = "gatekeeper_guardian"
    verbose_name = "Gatekeeper guardian"

from django.apps import AppConfig


# Minimal app config: enough for INSTALLED_APPS, no models yet.
class GatekeeperCacheConfig(AppConfig):
    name = "gatekeeper_cache"
    verbose_name = "Gatekeeper cache"

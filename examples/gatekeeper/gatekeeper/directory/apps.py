from django.apps import AppConfig


class DirectoryConfig(AppConfig):
    name = "gatekeeper.directory"
    label = "directory"
    verbose_name = "Gatekeeper directory"

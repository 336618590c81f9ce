from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "gatekeeper.accounts"
    label = "accounts"
    verbose_name = "Gatekeeper accounts"

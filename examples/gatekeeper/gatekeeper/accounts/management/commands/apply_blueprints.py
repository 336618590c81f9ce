from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from gatekeeper.accounts.models import Role
from gatekeeper.blueprints import BlueprintError, load_blueprints
from gatekeeper.directory.models import Membership


class Command(BaseCommand):
    help = "Create the groups and roles described by the blueprints in BLUEPRINTS_DIR."

    def add_arguments(self, parser):
        parser.add_argument(
            "--dir",
            dest="directory",
            help="read blueprints from this directory instead of settings.BLUEPRINTS_DIR",
        )

    def handle(self, *args, directory=None, **options):
        try:
            blueprints = load_blueprints(directory)
        except BlueprintError as exc:
            raise CommandError(str(exc)) from exc

        groups = roles = 0
        # All or nothing, and idempotent (get_or_create), so it is safe to
        # run on every start.
        with transaction.atomic():
            # Groups from every blueprint first: a role may name a group that
            # a later file (in name order) declares.
            for blueprint in blueprints:
                for entry in blueprint.get("groups") or []:
                    Group.objects.get_or_create(name=entry["name"])
                    groups += 1
            for blueprint in blueprints:
                for entry in blueprint.get("roles") or []:
                    role, _ = Role.objects.get_or_create(name=entry["name"])
                    for group_name in entry.get("groups") or []:
                        try:
                            group = Group.objects.get(name=group_name)
                        except Group.DoesNotExist:
                            raise CommandError(
                                f"role {role.name!r} names unknown group {group_name!r}"
                            ) from None
                        Membership.objects.get_or_create(role_name=role.name, group=group)
                    roles += 1

        self.stdout.write(
            f"applied {len(blueprints)} blueprints: {groups} groups, {roles} roles"
        )

from django.db import migrations


def copy_role_groups(apps, schema_editor):
    """Carry each Role's old single group over into a Membership row.

    Needs the historical Role *with* its `group` field, i.e. it must run
    before accounts/0002_drop_role_group (see the note there).
    """
    Role = apps.get_model("accounts", "Role")
    Membership = apps.get_model("directory", "Membership")
    db = schema_editor.connection.alias
    rows = (
        Role.objects.using(db)
        .filter(group_id__isnull=False)
        .values_list("name", "group_id")
    )
    Membership.objects.using(db).bulk_create(
        [Membership(role_name=name, group_id=group_id) for name, group_id in rows]
    )


class Migration(migrations.Migration):
    dependencies = [
        ("directory", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(copy_role_groups, migrations.RunPython.noop),
    ]

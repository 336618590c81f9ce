from django.db import migrations

# DELIBERATE DEFECT, kept so the example mirrors authentik (rbac/0010 drops
# Role.group_id before core/0056 reads it).
#
# directory/0002_copy_role_groups still reads Role.group_id, but nothing here
# says this migration must wait for it. With both leaves unordered relative to
# each other, `migrate` plans them in sorted app order (accounts < directory),
# so on a fresh database this runs first and directory/0002 then fails with
# FieldError: Cannot resolve keyword 'group_id' into field.
#
# The fix is one more dependency, ("directory", "0002_copy_role_groups"). It
# is not applied here: the build tool's recipe carries it as
# patches/migration-order.diff, just as authentik's packagers had to.


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="role",
            name="group",
        ),
    ]

from django.db import models


class Role(models.Model):
    """A named role.

    Roles used to point at a single auth.Group (migration 0001 has that
    `group` foreign key); the link now lives in directory.Membership, which
    allows many groups per role, and 0002 drops the old column.
    """

    name = models.CharField(max_length=150, unique=True)

    def __str__(self) -> str:
        return self.name

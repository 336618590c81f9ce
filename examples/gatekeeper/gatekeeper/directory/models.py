from django.db import models


class Membership(models.Model):
    """Members of `group` hold the role named `role_name`."""

    role_name = models.CharField(max_length=150)
    group = models.ForeignKey(
        "auth.Group", on_delete=models.CASCADE, related_name="role_memberships"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["role_name", "group"], name="directory_unique_membership"
            )
        ]

    def __str__(self) -> str:
        return f"{self.role_name} via {self.group}"

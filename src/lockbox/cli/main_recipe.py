"""``lockbox recipe show``: the resolved recipe of a project, defaults included."""

from __future__ import annotations

import argparse
import json

from lockbox.cli.context import Context, add_project_argument


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    recipe = subparsers.add_parser(
        "recipe", help="show a project's recipe", description="Work with recipes."
    )
    commands = recipe.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    show = commands.add_parser(
        "show",
        help="print the validated recipe with every default filled in",
        description=(
            "Validate PROJECT's recipe (lockbox.toml or [tool.lockbox]) and print it as "
            "TOML with every default written out."
        ),
    )
    add_project_argument(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.set_defaults(handler=run_show)


def run_show(args: argparse.Namespace, context: Context) -> int:
    import tomlkit

    from lockbox.inputs.project import load_project
    from lockbox.inputs.recipe import recipe_as_dict

    project = load_project(args.project)
    recipe = project.recipe
    data = recipe_as_dict(recipe)
    if args.json:
        context.out.print_json(json.dumps(data))
        return 0
    origin = recipe.source if recipe.source else "no recipe: every value is a default"
    context.print(f"# recipe of {project.app_name} ({origin})")
    context.print(tomlkit.dumps(data).rstrip())
    return 0

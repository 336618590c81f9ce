"""What a build is made from: the project, its recipe, uv.lock, the interpreter and the plan."""

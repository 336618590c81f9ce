"""The assembly phase: the interpreter entry and the application, offline."""

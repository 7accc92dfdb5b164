"""A plugin module that raises when it is imported: listed as broken, it must block no run."""

raise RuntimeError("this plugin is broken on purpose")

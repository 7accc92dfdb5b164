"""privbench's built-in plugins, one module each, loaded through the ``privbench`` entry points."""

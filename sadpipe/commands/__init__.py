"""One module per CLI command; each defines ``command`` (a click.Command).

``COMMANDS`` is the table of them, kept here (torch-free, just names) so that the CLI and the
pipeline code (which checks and preflights stage commands) read one list."""

# (command name, module under sadpipe.commands). Each module defines ``command``.
COMMANDS = (
    ("toy-data", "toy_data"),
    ("pretrain", "pretrain"),
    ("train", "train"),
    ("eval", "evaluate"),
    ("publish", "publish"),
    ("import-torchvision", "import_torchvision"),
    ("import-detectron", "import_detectron"),
    ("export-detectron", "export_detectron"),
    ("pseudo-label", "pseudo_label"),
    ("cache-logits", "cache_logits"),
    ("inspect-shards", "inspect_shards"),
    ("run", "run"),
    ("demo", "demo"),
)

"""The ``sadpipe`` command line: one click group, one module per command."""
import importlib

import click

from sadpipe.commands import COMMANDS
from sadpipe.errors import UserError


class LazyGroup(click.Group):
    """Imports a command's module only when that command is used (torch is slow to import)."""

    def list_commands(self, ctx):
        return [name for name, module in COMMANDS if _module_exists(module)]

    def get_command(self, ctx, name):
        for cmd_name, module in COMMANDS:
            if cmd_name == name and _module_exists(module):
                return importlib.import_module(f"sadpipe.commands.{module}").command
        return None


def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(f"sadpipe.commands.{module}") is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sadpipe")
def cli():
    """sadpipe: make RetinaNet detectors small and fast with Semi-supervised Adaptive
    Distillation (SAD).

    \b
    Typical flow:
      sadpipe toy-data data/            # or use your own COCO-format data
      sadpipe train --config pipelines/toy_teacher.toml --out runs/teacher
      sadpipe pseudo-label ...          # teacher labels unlabeled images
      sadpipe cache-logits ...          # teacher scores stored once, compactly
      sadpipe train --config pipelines/toy_student_sad.toml --teacher-shards ...
      sadpipe eval --checkpoint runs/student/model_final.pt ...

    \b
    The SAD release's Detectron models:
      sadpipe import-detectron model.pkl --arch resnet101 --out teacher.pt
      sadpipe export-detectron student.pt --out student.pkl

    Run `sadpipe COMMAND --help` for each command's options.
    """


def main():
    try:
        cli(standalone_mode=True)
    except UserError as err:  # raised outside click's own handling (e.g. in callbacks)
        err.show()
        raise SystemExit(err.exit_code)


if __name__ == "__main__":
    main()

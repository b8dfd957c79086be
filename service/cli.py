"""``pandapulse``: one console script, one module per command.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``; only the chosen
one is imported, so ``pandapulse synth`` does not load the web stack. The script lives in
``service``, the layer that may name both: ``model`` never imports ``service``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from model.errors import PandaPulseError

COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("model.predict", "score recordings with a trained CGANet"),
    "synth": ("model.synth", "generate synthetic giant panda breeding encounters"),
    "train": ("model.train", "train CGANet on a dataset folder"),
    "calibrate": (
        "model.recalibrate",
        "refit a trained model's calibration on the segments the detector cuts, as the service"
        " scores them",
    ),
    "evaluate": ("model.evaluate", "cross-validate CGANet against SVM and FLDA (paper tables)"),
    "serve": ("service.main", "run the live monitoring service and dashboard"),
    "fleet": (
        "service.fleet",
        "show every enclosure of every box that publishes to the MQTT broker, on one page",
    ),
    "doctor": ("service.doctor", "check audio devices, GPU, model, data directory and config"),
    "export-dataset": (
        "service.export",
        "write stored encounters with an outcome as a dataset folder for train/evaluate",
    ),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pandapulse",
        description="Giant panda breeding-encounter monitoring with CGANet.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except PandaPulseError as err:
        print(f"pandapulse {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

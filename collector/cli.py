"""``syslog-collector``: the commands that are not the server itself."""

from __future__ import annotations

import argparse
import sys

from collector import config as configuration
from collector.config import ConfigError
from collector.tap import load_checked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="syslog-collector",
        description="Tools for the syslog collector (the server itself runs as "
                    "'twistd -n syslog-collector').",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check-config", help="validate a config file and print the effective settings")
    check.add_argument("file", metavar="FILE", help="the TOML config file")
    args = parser.parse_args(argv)
    return check_config(args.file)


def check_config(path: str) -> int:
    try:
        config = load_checked(path)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(configuration.describe(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())

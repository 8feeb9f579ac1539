"""``scorebridge maps list|check``: the shipped control maps, and a map checked against the slots
a configuration (or ``--slot`` flags) would run, without starting the bridge."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import MappingError

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    maps = subparsers.add_parser("maps", help="list the shipped control maps, or check a map")
    maps.add_argument("action", choices=("list", "check"))
    maps.add_argument("files", nargs="*", metavar="FILE", help="maps to check (paths or shipped names)")
    maps.add_argument("--config", type=Path, help="check against this configuration's slots")
    maps.add_argument("--slot", action="append", default=[], metavar="NAME=ENGINE[@IN/OUT]",
                      help="check against these slots instead (as for serve)")
    maps.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bridge.config import load_config, parse_slot_flag
    from bridge.control import find_map
    from bridge.maps import load_map, parse_toml, read_map_text
    from engines import engine_class
    from midi_maps import maps_dir

    if args.action == "list":
        # Each map is written for its own slots (rule, song...): listed, not checked here.
        for path in sorted(maps_dir().glob("*.toml")):
            data = parse_toml(read_map_text(path), path)
            header = data.get("map", {})
            print(f"{path.stem}: {header.get('description') or header.get('name', path.stem)} "
                  f"({len(data.get('bind', []))} bindings)")
        return 0
    if not args.files:
        raise MappingError("maps check needs at least one FILE")
    config = load_config(args.config)
    slot_configs = [parse_slot_flag(s) for s in args.slot] or config.slots
    slots = {s.name: engine_class(s.engine) for s in slot_configs}
    for name in args.files:
        path = find_map(name)
        control_map = load_map(path, slots)
        print(f"[ok] {path}: {len(control_map.bindings)} bindings valid for slots {', '.join(slots)}")
    return 0

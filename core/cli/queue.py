"""``queue``: the review queue from the command line (JSON on stdout).

``stats`` counts per state; ``add`` queues a stored item by hand; ``claim``
leases the most uncertain item (or prints ``null``); ``label`` records a
decision; ``release``, ``skip``, ``renew`` and ``undo`` complete the loop.
``--db``/``--create`` may come before or after the action.
"""
from __future__ import annotations

import argparse
import json

#: Kept literal so building the parser does not import the store (same as core.review.store.LABELS).
LABELS = ("real", "fake", "unsure")


from core.cli._db import add_db_option as _db


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("queue", help="review queue: stats, add, claim, label, release, skip, renew, undo, list")
    _db(p)  # accepted before the action too: ``queue --db X stats`` and ``queue stats --db X``
    cmds = p.add_subparsers(dest="queue_command", required=True, metavar="ACTION")

    c = cmds.add_parser("stats", help="counts per queue state")
    _db(c)
    c.set_defaults(func=_stats)

    c = cmds.add_parser("add", help="queue any stored item by hand")
    _db(c)
    c.add_argument("--sha256", required=True)
    c.add_argument("--by", help="who queued it")
    c.add_argument("--reason", default="manual")
    c.set_defaults(func=_add)

    c = cmds.add_parser("claim", help="lease the next item (most uncertain first); prints it or null")
    _db(c)
    c.add_argument("--reviewer", required=True)
    c.add_argument("--lease-seconds", type=float, help="lease length (default 600)")
    c.set_defaults(func=_claim)

    c = cmds.add_parser("label", help="record a decision on an item")
    _db(c)
    c.add_argument("--sha256", required=True)
    c.add_argument("--label", required=True, choices=list(LABELS))
    c.add_argument("--reviewer", required=True)
    c.add_argument("--note")
    c.add_argument("--seconds-spent", type=float)
    c.set_defaults(func=_label)

    for name, helptext in (("release", "give a leased item back (keeps its place)"),
                           ("skip", "send an item to the back of the queue"),
                           ("renew", "extend one's lease")):
        c = cmds.add_parser(name, help=helptext)
        _db(c)
        c.add_argument("--sha256", required=True)
        c.add_argument("--reviewer", required=True)
        if name == "renew":
            c.add_argument("--lease-seconds", type=float)
        c.set_defaults(func=_lease_action, action=name)

    c = cmds.add_parser("undo", help="undo one's latest label within the undo window")
    _db(c)
    c.add_argument("--reviewer", required=True)
    c.add_argument("--window-seconds", type=float, help="undo window (default 600)")
    c.set_defaults(func=_undo)

    c = cmds.add_parser("list", help="queue rows in claim order")
    _db(c)
    c.add_argument("--state", choices=["queued", "leased", "labelled"])
    c.add_argument("--limit", type=int, default=50)
    c.set_defaults(func=_list)


def _open(args: argparse.Namespace):
    from core.cli._db import open_db

    return open_db(args)


def _print(obj: object) -> int:
    print(json.dumps(obj))
    return 0


def _stats(args: argparse.Namespace) -> int:
    with _open(args) as store:
        return _print(store.queue_stats())


def _add(args: argparse.Namespace) -> int:
    with _open(args) as store:
        return _print(store.enqueue(args.sha256, by=args.by, reason=args.reason))


def _claim(args: argparse.Namespace) -> int:
    with _open(args) as store:
        return _print(store.claim_next(args.reviewer, lease_seconds=args.lease_seconds))


def _label(args: argparse.Namespace) -> int:
    with _open(args) as store:
        return _print(store.label(args.sha256, args.label, args.reviewer, note=args.note,
                                  seconds_spent=args.seconds_spent))


def _lease_action(args: argparse.Namespace) -> int:
    with _open(args) as store:
        if args.action == "renew":
            expires = store.renew_lease(args.sha256, args.reviewer, lease_seconds=args.lease_seconds)
            return _print({"sha256": args.sha256, "lease_expires_at": expires})
        getattr(store, args.action)(args.sha256, args.reviewer)
        return _print({"sha256": args.sha256, "action": args.action})


def _undo(args: argparse.Namespace) -> int:
    with _open(args) as store:
        return _print(store.undo_last(args.reviewer, window_seconds=args.window_seconds))


def _list(args: argparse.Namespace) -> int:
    with _open(args) as store:
        return _print(store.queue_items(args.limit, state=args.state))

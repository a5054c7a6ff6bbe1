"""``learn``: one learning step now, the same door the background learner runs after every N labels.

Takes the store's ``learn`` lease (prints ``busy`` when another process holds it), fits a candidate on
base data plus all reviewer labels, compares it out of fold with the active version, registers it and
activates it when it ranks better without calling more reals clearly fake (``--propose``: never
activate), then recomputes the queue's order. ``--priorities`` only recomputes the queue's order for
the active version (what a manual activate or roll back needs when no page is open).
"""
from __future__ import annotations

import argparse
import json

from core.cli._db import add_db_option, open_db


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("learn", help="one learning step from reviewer labels (lease, fit, compare, activate or "
                                     "propose, re-order the queue)")
    add_db_option(p)
    p.add_argument("--propose", action="store_true", help="register the candidate but never activate it")
    p.add_argument("--priorities", action="store_true", help="only recompute the queue's order for the active version")
    p.add_argument("--base-data", metavar="DIR", help="base training data (default: the bundled base features)")
    p.add_argument("--by", default="learner", help="who learns (recorded in the provenance)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.model.registry import ModelRegistry
    from core.review.actions.learn import learn_step, reprioritise

    store = open_db(args)
    try:
        if args.priorities:
            out = {"reprioritised": reprioritise(store, ModelRegistry(), force=True)}
        else:
            out = learn_step(store, ModelRegistry(), activate="propose" if args.propose else None, by=args.by,
                             base_data=args.base_data).to_json()
    finally:
        store.close()
    print(json.dumps(out, default=str) if args.json else (out.get("message") or f"{out['reprioritised']} queue rows "
                                                                                   "re-ordered"))
    return 0 if out.get("status") != "busy" else 1

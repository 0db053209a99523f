#!/usr/bin/env python3
"""The pull request body for a scheduled `airlock lock images.txt --update` (Markdown, on stdout).

    airlock lock images.txt --update > lock.out
    python scripts/lock_pr_body.py lock.out --max-chars 60000 > body.md    (GitHub: 65,536 at most)
    python scripts/lock_pr_body.py lock.out --max-chars 3900 > body.md     (Azure Repos: 4,000 at most)

The body is the command's own diff lines, one per image: `+ TARGET DIGEST (SOURCE)` added, `~ TARGET OLD -> NEW`
a tag that moved, `- TARGET DIGEST` removed, then its summary line. Lines that do not fit in ``--max-chars``
are counted instead ("... and N more"), so a large refresh still opens a pull request whose diff shows them
all. Standard library only.
"""
from __future__ import annotations

import argparse
import re
import sys

CHANGE = re.compile(r"^[-+~] \S")
HEADER = ("Scheduled `airlock lock images.txt --update`: the digests below are what the ACR will import once "
          "this is merged and images.lock is uploaded with images.txt. Review them like code "
          "(`+` added, `~` moved: old -> new, `-` removed).")


def render(output: str, max_chars: int) -> str:
    lines = output.splitlines()
    changes = [line for line in lines if CHANGE.match(line)]
    summary = next((line for line in reversed(lines) if line.strip() and not CHANGE.match(line)), "")
    head = [HEADER, "", "```text"]
    tail = ["```", "", summary] if summary else ["```"]
    budget = max_chars - sum(len(x) + 1 for x in head + tail) - 60  # room for the "... and N more" line
    shown: list[str] = []
    for line in changes:
        if budget - (len(line) + 1) < 0:
            break
        shown.append(line)
        budget -= len(line) + 1
    if not changes:
        shown = ["(no digest changed: the lock file was rewritten, e.g. for a new manifest fingerprint)"]
    rest = len(changes) - len(shown) if changes else 0
    more = [f"... and {rest} more (see the diff of images.lock)"] if rest > 0 else []
    return "\n".join(head + shown + more + tail) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="what `airlock lock images.txt --update` printed")
    parser.add_argument("--max-chars", type=int, default=60000, help="the body's length limit")
    args = parser.parse_args(argv)
    with open(args.output, encoding="utf-8") as handle:
        sys.stdout.write(render(handle.read(), args.max_chars))
    return 0


if __name__ == "__main__":
    sys.exit(main())

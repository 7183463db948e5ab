#!/usr/bin/env python3
"""Checks that every key of a chart's values.yaml has a comment on the line(s) above it.

Usage: values_documented.py VALUES_YAML...
Keys inside a value that is a Kubernetes object or free-form map documented as a whole (a
security context, resources, labels, templates) are exempt. Exits 1 naming each bare key.
"""

import re
import sys

WHOLE = {"podSecurityContext", "securityContext", "resources", "workspaceTemplates", "podLabels"}
KEY = re.compile(r"^(\s*)(?:- )?([A-Za-z0-9_.-]+):( |$)")


def main():
    bare = 0
    for path in sys.argv[1:]:
        stack = []  # (indent, key) of the enclosing keys
        prev = ""
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\n")
                m = KEY.match(line)
                if m and not line.lstrip().startswith("#"):
                    indent, key = len(m.group(1)), m.group(2)
                    while stack and stack[-1][0] >= indent:
                        stack.pop()
                    exempt = any(k in WHOLE for _, k in stack)
                    if not exempt and not prev.lstrip().startswith("#"):
                        print(f"{path}:{n}: {key} has no comment above it", file=sys.stderr)
                        bare += 1
                    stack.append((indent, key))
                if line.strip():
                    prev = line
    return 1 if bare else 0


if __name__ == "__main__":
    sys.exit(main())

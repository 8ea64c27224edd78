#!/usr/bin/env python3
"""Check that a built libmtiart exports exactly the functions its header declares.

Usage: check_exports.py <path/to/libmtiart.so> <path/to/mtiart.h>

Collects the library's exported symbols with `nm -D --defined-only` (the NM environment
variable may name another nm) and every function declared with MTIART_API in the header,
and exits 1, listing the differences both ways, unless the two sets are equal.
"""

import os
import re
import subprocess
import sys

# Symbols the toolchain may export that are not part of our ABI.
IGNORED = {"_init", "_fini"}


def exported_symbols(library):
    nm = os.environ.get("NM", "nm")
    out = subprocess.run([nm, "-D", "--defined-only", library], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    symbols = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        kind, name = fields[-2], fields[-1]
        if kind == "A":  # version definitions such as MTIART_0
            continue
        name = name.split("@", 1)[0]
        if name in IGNORED:
            continue
        symbols[name] = kind
    return symbols


def declared_functions(header):
    with open(header, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^[ \t]*#.*?(?<!\\)$", " ", text, flags=re.M | re.S)  # directives
    names = re.findall(r"\bMTIART_API\b[^;{}()]*?\b([A-Za-z_]\w*)\s*\(", text)
    return set(names)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    library, header = argv[1], argv[2]
    exported = exported_symbols(library)
    declared = declared_functions(header)
    if not declared:
        print("check_exports: no MTIART_API declarations found in %s" % header)
        return 1
    not_declared = sorted(set(exported) - declared)
    not_exported = sorted(declared - set(exported))
    not_functions = sorted(n for n in declared & set(exported) if exported[n] not in "TWi")
    for name in not_declared:
        print("exported but not declared MTIART_API in the header: %s (%s)" % (name, exported[name]))
    for name in not_exported:
        print("declared MTIART_API but not exported by the library: %s" % name)
    for name in not_functions:
        print("exported, but not as a function: %s (nm type %s)" % (name, exported[name]))
    if not_declared or not_exported or not_functions:
        print("check_exports: FAIL (%d exported, %d declared)" % (len(exported), len(declared)))
        return 1
    print("check_exports: OK, %d functions exported and declared" % len(declared))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Generate the C source of the mtia_graph._mtiart cffi extension (API mode, out of line).

Usage:
    gen_cffi.py --cc <compiler command...> --header include/mtiart.h \
                --extra python/mtia_graph/_cdef_extra.h \
                --source python/mtia_graph/_cffi_source.c --output _mtiart.c

The public header is run through the C preprocessor with MTIART_CDEF defined (then it
includes no system header and its export macro is empty), which yields plain declarations
that cffi's parser accepts. Integer macros (MTIART_MAX_DIMS, MTIART_REDUCE_ALL, the
version macros, ...) vanish in preprocessing, so they are added back to the cdef as
`#define NAME ...`: in API mode the C compiler computes their values from the real header.
The text of --extra (e.g. `extern "Python" ...` callback declarations) is appended when
that file exists, and the C code of --source (helpers those declarations name) is compiled
into the extension after the header. No setuptools: ffi.emit_c_code() writes the C file that meson compiles.

cffi releases the GIL around every call it wraps. A declaration of --extra whose line ends
in `/* keeps the GIL */` gets a wrapper that holds it instead: for helpers that only enqueue
work and never wait (dropping and retaking the GIL costs as much as a sixth of such a call).
"""

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys

# Object-like macros of the header that are not integer constants of the API.
SKIP_MACROS = {"MTIART_API", "MTIART_H", "MTIART_CDEF", "MTIART_BUILDING_LIBRARY"}
DEFINE_RE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(MTIART_[A-Z0-9_]+)(?![(\w])(.*)$")
# A value built only from integer literals, operators, parentheses and other MTIART_ macros.
INT_EXPR_RE = re.compile(r"^[\s()+\-*/%<>|&~^0-9xXa-fA-FuUlL]*(?:MTIART_[A-Z0-9_]+[\s()+\-*/%<>|&~^0-9xXa-fA-FuUlL]*)*$")


KEEP_GIL_RE = re.compile(r"\b(\w+)\s*\([^;]*\)\s*;\s*/\*\s*keeps the GIL\s*\*/\s*$", re.M)


def gil_keepers(extra):
    """Names of the --extra functions whose declarations say they keep the GIL."""
    if not extra or not os.path.exists(extra):
        return []
    with open(extra, encoding="utf-8") as f:
        return KEEP_GIL_RE.findall(f.read())


def keep_gil(code, name):
    """The generated C with the wrapper of `name` holding the GIL across its call."""
    start = re.search(r"^_cffi_f_%s\(PyObject \*self, PyObject \*\w+\)\n\{\n" % re.escape(name),
                      code, re.M)
    if not start:
        sys.exit("gen_cffi.py: no cffi wrapper of %s to keep the GIL in" % name)
    end = code.index("\n}\n", start.end())
    body = code[start.end():end]
    if body.count("  Py_BEGIN_ALLOW_THREADS\n") != 1 or body.count("  Py_END_ALLOW_THREADS\n") != 1:
        sys.exit("gen_cffi.py: the wrapper of %s does not release the GIL once, as expected" % name)
    body = body.replace("  Py_BEGIN_ALLOW_THREADS\n", "  { /* keeps the GIL */\n")
    body = body.replace("  Py_END_ALLOW_THREADS\n", "  }\n")
    return code[:start.end()] + body + code[end:]


def integer_macros(header_text):
    """Names of the header's integer-valued MTIART_* object-like macros, in order."""
    text = header_text.replace("\\\n", " ")  # join continuation lines
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    names = []
    for line in text.splitlines():
        m = DEFINE_RE.match(line)
        if not m:
            continue
        name, value = m.group(1), m.group(2).strip()
        if name in SKIP_MACROS or not value or name in names:
            continue
        if INT_EXPR_RE.match(value) and re.search(r"[0-9]|MTIART_", value):
            names.append(name)
    return names


def preprocess(cc, header):
    cmd = list(cc) + ["-E", "-P", "-DMTIART_CDEF", "-nostdinc", "-x", "c", header]
    try:
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, universal_newlines=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit("gen_cffi.py: preprocessing failed: %s: %s" % (" ".join(cmd), exc))
    return "\n".join(line for line in out.stdout.splitlines() if line.strip()) + "\n"


def build_cdef(cc, header, extra):
    with open(header, encoding="utf-8") as f:
        header_text = f.read()
    parts = [preprocess(cc, header)]
    macros = integer_macros(header_text)
    if macros:
        parts.append("".join("#define %s ...\n" % name for name in macros))
    if extra and os.path.exists(extra):
        with open(extra, encoding="utf-8") as f:
            parts.append(f.read())
    return "\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cc", nargs="+", required=True, help="C compiler command")
    parser.add_argument("--header", required=True)
    parser.add_argument("--extra", help="extra cdef text appended if the file exists")
    parser.add_argument("--source", help="C code compiled into the extension, if the file exists")
    parser.add_argument("--output", required=True)
    parser.add_argument("--module", default="mtia_graph._mtiart")
    parser.add_argument("--dump-cdef", help="also write the cdef text to this file")
    args = parser.parse_args(argv)

    import cffi

    cdef = build_cdef(args.cc, args.header, args.extra)
    if args.dump_cdef:
        with open(args.dump_cdef, "w", encoding="utf-8") as f:
            f.write(cdef)
    ffi = cffi.FFI()
    try:
        ffi.cdef(cdef)
    except cffi.CDefError as exc:
        sys.exit("gen_cffi.py: cffi rejected the declarations: %s" % exc)
    source = '#include "mtiart.h"\n'
    if args.source and os.path.exists(args.source):
        with open(args.source, encoding="utf-8") as f:
            source += f.read()
    ffi.set_source(args.module, source)
    # Write to a temporary name and rename, so the output is always fresh for ninja
    # (emit_c_code leaves an unchanged file untouched) and never half-written.
    tmp = args.output + ".tmp"
    with contextlib.redirect_stdout(io.StringIO()):  # silence cffi's "generating ..."
        ffi.emit_c_code(tmp)
    with open(tmp, encoding="utf-8") as f:
        code = f.read()
    for name in gil_keepers(args.extra):
        code = keep_gil(code, name)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(code)
    os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

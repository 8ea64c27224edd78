"""Leak-check a program that uses mtia_graph: run it under valgrind's memcheck.

    python -m mtia_graph.memcheck [VALGRIND OPTIONS] script.py [ARGS...]
    python -m mtia_graph.memcheck [VALGRIND OPTIONS] -m module [ARGS...]
    python -m mtia_graph.memcheck [VALGRIND OPTIONS] -c code [ARGS...]

The program runs in the interpreter running this module (the real binary, never a pyenv
shim or launcher script: valgrind would check the script's shell instead), with
``PYTHONMALLOC=malloc`` so that memcheck sees Python's allocations, and with this
package's suppressions of CPython's, numpy's and cffi's known false reports. libmtiart
announces every device block to memcheck, so device memory is checked like heap memory.

The verdict (exit status 99, or the ``--error-exitcode`` given, on failure):

* any memcheck error - an invalid read or write (a device block used after ``free`` or
  after the graph owning its pool was reset), a use of an uninitialised value, a bad
  free - fails the run;
* device memory never freed fails the run: a device block still allocated once the
  interpreter has finalised (every object it could free is gone by then). The report
  shows the Python lines that allocated each such block, recorded as the program runs,
  since valgrind's stacks stop at the interpreter's C frames;
* libmtiart's own memory definitely or indirectly lost fails the run. Leaks of the
  interpreter and of other extensions at exit are counted but not judged.

Otherwise the program's own exit status is returned.
"""

from __future__ import annotations

import atexit
import ctypes
import linecache
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

__all__ = ["interpreter", "main", "suppression_files", "valgrind_command"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_PRELOAD = os.path.join(_PACKAGE_DIR, "_preload", "_memcheck_preload.so")
_SUPPRESSIONS_DIR = os.path.join(_PACKAGE_DIR, "_suppressions")

FAILURE_EXIT_STATUS = 99
_LIBMTIART = "libmtiart.so"
_MAX_SITE_FRAMES = 8
# Separates the fields of one recorded frame (file, line, function): never in a path.
_SEP = "\x1f"


def suppression_files() -> list[str]:
    """The suppression files shipped with the package, in a stable order."""
    return sorted(
        os.path.join(_SUPPRESSIONS_DIR, f)
        for f in os.listdir(_SUPPRESSIONS_DIR)
        if f.endswith(".supp")
    )


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def interpreter() -> str:
    """The interpreter binary to run under valgrind.

    ``sys.executable`` when it is a binary (a venv's ``bin/python`` is a link to one and
    keeps the venv's ``pyvenv.cfg`` next to it); when it is a script (a shim that execs
    the real interpreter), the binary this process actually runs.
    """
    exe = sys.executable
    if exe and _is_elf(os.path.realpath(exe)):
        return exe
    return os.path.realpath("/proc/self/exe")


@dataclass
class Target:
    """What to run: a script path, ``-m`` module or ``-c`` code, with its arguments."""

    kind: str  # "script", "module" or "code"
    target: str
    args: list[str]


_USAGE = (
    "usage: python -m mtia_graph.memcheck [VALGRIND OPTIONS] "
    "(script.py | -m module | -c code) [ARGS...]"
)


def parse_args(argv: Sequence[str]) -> tuple[list[str], Target]:
    """Split the command line into valgrind options and the program to run.

    Raises ``SystemExit(2)`` with a message for a command line that names no program or
    passes an option the launcher must own (``--xml*``, ``--tool``).
    """
    options: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-m", "-c"):
            if i + 1 >= len(argv):
                _usage_error(f"{arg} needs an argument")
            kind = "module" if arg == "-m" else "code"
            return options, Target(kind, argv[i + 1], list(argv[i + 2 :]))
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith(("--xml", "--tool")):
            _usage_error(f"{arg}: the launcher runs memcheck and reads its XML output itself")
        options.append(arg)
        i += 1
    if i >= len(argv):
        _usage_error("no program to run")
    return options, Target("script", argv[i], list(argv[i + 1 :]))


def _usage_error(message: str) -> None:
    print(f"{_USAGE}\nmtia_graph.memcheck: {message}", file=sys.stderr)
    raise SystemExit(2)


def _error_exit_status(options: list[str]) -> tuple[list[str], int]:
    """Take ``--error-exitcode=N`` out of the valgrind options: the launcher applies it."""
    status = FAILURE_EXIT_STATUS
    kept = []
    for opt in options:
        if opt.startswith("--error-exitcode="):
            try:
                status = int(opt.split("=", 1)[1])
            except ValueError:
                _usage_error(f"{opt}: not a number")
        else:
            kept.append(opt)
    return kept, status


def valgrind_command(
    valgrind: str, options: Sequence[str], target: Target, xml_file: str, report_file: str
) -> list[str]:
    """The valgrind command line: the launcher's settings first, so the user's win."""
    cmd = [
        valgrind,
        "--tool=memcheck",
        "--leak-check=full",
        "--show-leak-kinds=definite,indirect",
        "--num-callers=40",
        "--child-silent-after-fork=yes",
        "--xml=yes",
        f"--xml-file={xml_file}",
    ]
    cmd += [f"--suppressions={f}" for f in suppression_files()]
    cmd += list(options)
    bootstrap = "import sys; from mtia_graph.memcheck import _child; _child(sys.argv[1:])"
    cmd += [interpreter(), "-c", bootstrap, report_file, target.kind, target.target, *target.args]
    return cmd


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONMALLOC"] = "malloc"  # pymalloc's arenas would hide blocks from memcheck
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = _PRELOAD + (" " + preload if preload else "")
    return env


# ---------------------------------------------------------------------------------------
# Inside valgrind: record allocation sites, arm the exit report, run the program
# ---------------------------------------------------------------------------------------

_SITE_HOOK_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.c_uint64)
# The installed hook; a module global so that it outlives the program's last allocation.
_site_hook: Any = None


def _site_recorder(preload: ctypes.CDLL, skip: tuple[str, ...]) -> Callable[[int, int], None]:
    """The hook the preloaded library calls after each allocation: it stores the calling
    Python frames outside ``skip`` (this package, runpy), innermost first."""

    def record(address: int, size: int) -> None:
        # Frame 1 is the Python frame that called into libmtiart.
        frame: FrameType | None = sys._getframe(1)
        inner: list[str] = []
        outside: list[str] = []
        while frame is not None and len(outside) < _MAX_SITE_FRAMES:
            code = frame.f_code
            if code is _child.__code__:
                break
            entry = f"{code.co_filename}{_SEP}{frame.f_lineno}{_SEP}{code.co_name}\n"
            if code.co_filename.startswith(skip):
                if not outside and len(inner) < _MAX_SITE_FRAMES:
                    inner.append(entry)  # kept when the package itself is the program
            else:
                outside.append(entry)
            frame = frame.f_back
        text = "".join(outside or inner)
        if text:
            preload.mtia_memcheck_note(address, text.encode("utf-8", "surrogateescape"))

    return record


def _child(argv: list[str]) -> None:
    """Run the program (called by the bootstrap inside valgrind)."""
    global _site_hook
    report_file, kind, target, *args = argv
    from ._C import ffi, lib

    preload = ctypes.CDLL(_PRELOAD)
    preload.mtia_memcheck_note.argtypes = [ctypes.c_uint64, ctypes.c_char_p]
    preload.mtia_memcheck_arm.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p]
    preload.mtia_memcheck_set_site_hook.argtypes = [ctypes.c_void_p]
    skip = (_PACKAGE_DIR + os.sep, runpy.__file__, "<frozen runpy>")
    _site_hook = _SITE_HOOK_TYPE(_site_recorder(preload, skip))
    preload.mtia_memcheck_set_site_hook(ctypes.cast(_site_hook, ctypes.c_void_p))
    # The ctypes thunk dies with the interpreter: no allocation may call it after that.
    atexit.register(preload.mtia_memcheck_set_site_hook, None)

    def address(name: str) -> int:
        return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))

    if (
        preload.mtia_memcheck_arm(
            os.fsencode(report_file),
            address("mtiart_device_count"),
            address("mtiart_memory_snapshot"),
        )
        != 0
    ):
        raise SystemExit("mtia_graph.memcheck: could not arm the exit report")

    if kind == "script":
        sys.argv = [target, *args]
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")
    elif kind == "module":
        sys.argv = [target, *args]
        sys.path[0] = os.getcwd()
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c", *args]
        sys.path[0] = ""
        main_globals = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(compile(target, "<string>", "exec"), main_globals)


# ---------------------------------------------------------------------------------------
# After valgrind: read its XML and the exit report, print the verdict
# ---------------------------------------------------------------------------------------


@dataclass
class Frame:
    ip: str
    obj: str = ""
    fn: str = ""
    file: str = ""
    line: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file else f"in {self.obj or '???'}"
        return f"{self.ip}: {self.fn or '???'} ({where})"


@dataclass
class MemcheckError:
    """One error context of valgrind's XML output."""

    kind: str
    what: str
    count: int
    stacks: list[tuple[str, list[Frame]]]  # (heading, frames); the first heading is ""
    leaked_bytes: int = 0
    leaked_blocks: int = 0

    @property
    def is_leak(self) -> bool:
        return self.kind.startswith("Leak_")

    @property
    def in_libmtiart(self) -> bool:
        return any(
            os.path.basename(f.obj).startswith(_LIBMTIART)
            for _, frames in self.stacks
            for f in frames
        )


def read_errors(xml_file: str) -> list[MemcheckError]:
    """The error contexts of a memcheck XML file, with their occurrence counts."""
    root = ET.parse(xml_file).getroot()
    counts = {
        pair.findtext("unique"): int(pair.findtext("count") or 1) for pair in root.iter("pair")
    }
    errors = []
    for err in root.findall("error"):
        xwhat = err.find("xwhat")
        what = err.findtext("what") or (xwhat.findtext("text") if xwhat is not None else "")
        stacks: list[tuple[str, list[Frame]]] = []
        heading = ""
        for child in err:
            if child.tag == "auxwhat":
                heading = child.text or ""
            elif child.tag == "stack":
                frames = [
                    Frame(
                        ip=f.findtext("ip") or "",
                        obj=f.findtext("obj") or "",
                        fn=f.findtext("fn") or "",
                        file=f.findtext("file") or "",
                        line=f.findtext("line") or "",
                    )
                    for f in child.findall("frame")
                ]
                stacks.append((heading, frames))
                heading = ""
        e = MemcheckError(
            kind=err.findtext("kind") or "",
            what=what or "",
            count=counts.get(err.findtext("unique"), 1),
            stacks=stacks,
        )
        if xwhat is not None:
            e.leaked_bytes = int(xwhat.findtext("leakedbytes") or 0)
            e.leaked_blocks = int(xwhat.findtext("leakedblocks") or 0)
        errors.append(e)
    return errors


@dataclass
class DeviceBlock:
    """A device block still allocated at exit, with the Python frames that allocated it."""

    address: int
    size: int
    device: int
    pool: tuple[int, int]
    site: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, function)


def read_exit_report(report_file: str) -> list[DeviceBlock]:
    """The blocks the exit report lists (none when the program never reached its end)."""
    blocks: list[DeviceBlock] = []
    try:
        with open(report_file, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return blocks
    current: DeviceBlock | None = None
    for line in lines:
        if line.startswith("block "):
            _, addr, size, dev, p0, p1 = line.split()
            current = DeviceBlock(int(addr, 16), int(size), int(dev), (int(p0), int(p1)))
            blocks.append(current)
        elif line == "end":
            current = None
        elif current is not None and line.count(_SEP) == 2:
            file, lineno, func = line.split(_SEP)
            current.site.append((file, int(lineno), func))
    return blocks


def _print_error(e: MemcheckError, out: TextIO) -> None:
    times = f" ({e.count} times)" if e.count > 1 else ""
    print(f"\n{e.what}{times}", file=out)
    for heading, frames in e.stacks:
        if heading:
            print(f" {heading}", file=out)
        for i, frame in enumerate(frames):
            print(f"   {'at' if i == 0 else 'by'} {frame}", file=out)


def _print_blocks(blocks: list[DeviceBlock], out: TextIO) -> None:
    total = sum(b.size for b in blocks)
    print(f"\nDevice memory never freed: {total:,} bytes in {len(blocks)} blocks", file=out)
    for b in blocks:
        pool = "default pool" if b.pool == (0, 0) else f"pool {b.pool}"
        where = "allocated at:" if b.site else "allocated outside Python"
        print(
            f"  {b.size:,} bytes at {b.address:#x} (device {b.device}, {pool}), {where}", file=out
        )
        for file, lineno, func in b.site:
            print(f'    File "{file}", line {lineno}, in {func}', file=out)
            source = linecache.getline(file, lineno).strip()
            if source:
                print(f"      {source}", file=out)


def verdict(errors: Iterable[MemcheckError]) -> tuple[list[MemcheckError], list[MemcheckError]]:
    """(the errors that fail the run, the leaks that are only counted)."""
    judged, counted = [], []
    for e in errors:
        if not e.is_leak or e.in_libmtiart:
            judged.append(e)
        else:
            counted.append(e)
    return judged, counted


def main(argv: Sequence[str] | None = None) -> int:
    """Run the program under memcheck; return the exit status described above."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    options, target = parse_args(argv)
    options, failure_status = _error_exit_status(options)
    valgrind = os.environ.get("VALGRIND") or shutil.which("valgrind")
    if not valgrind:
        print(
            "mtia_graph.memcheck: valgrind not found: install it first "
            "(Debian/Ubuntu: apt-get install valgrind)",
            file=sys.stderr,
        )
        return 2
    if not os.path.exists(_PRELOAD):
        print(f"mtia_graph.memcheck: {_PRELOAD} is missing: reinstall mtia_graph", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mtia-memcheck-") as tmp:
        xml_file = os.path.join(tmp, "memcheck.xml")
        report_file = os.path.join(tmp, "device-blocks.txt")
        cmd = valgrind_command(valgrind, options, target, xml_file, report_file)
        status = subprocess.call(cmd, env=_child_environment())
        try:
            errors = read_errors(xml_file)
        except (OSError, ET.ParseError) as exc:
            print(
                f"mtia_graph.memcheck: valgrind wrote no usable report ({exc}); "
                f"exit status {status}",
                file=sys.stderr,
            )
            return status or 2
        blocks = read_exit_report(report_file)

    judged, counted = verdict(errors)
    out = sys.stderr
    print("\n==== mtia_graph.memcheck ====", file=out)
    for e in judged:
        _print_error(e, out)
    if blocks:
        _print_blocks(blocks, out)
    n_errors = sum(e.count for e in judged if not e.is_leak)
    lost_bytes = sum(e.leaked_bytes for e in judged if e.is_leak)
    device_bytes = sum(b.size for b in blocks)
    others = sum(e.leaked_bytes for e in counted)
    summary = (
        f"{n_errors} errors, {device_bytes:,} bytes of device memory never freed, "
        f"{lost_bytes:,} bytes lost by libmtiart ({others:,} bytes lost elsewhere, "
        f"not judged)"
    )
    if judged or blocks:
        print(f"\nmtia_graph.memcheck: FAILED: {summary}", file=out)
        return failure_status
    print(f"\nmtia_graph.memcheck: passed: {summary}", file=out)
    return status


if __name__ == "__main__":
    sys.exit(main())

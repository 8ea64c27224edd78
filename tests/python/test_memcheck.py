"""python -m mtia_graph.memcheck: command line, interpreter resolution, reading valgrind's
XML, and - where valgrind is installed - both verdicts on real programs
(tests/valgrind/py_*.py state the verdict they must get in ``memcheck-expect`` lines)."""

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtia_graph import memcheck

SELFTESTS = Path(__file__).resolve().parent.parent / "valgrind"
have_valgrind = shutil.which("valgrind") is not None
# pytest itself under the launcher (tools/memcheck python): no valgrind inside valgrind.
under_memcheck = "_memcheck_preload" in os.environ.get("LD_PRELOAD", "")
needs_valgrind = pytest.mark.skipif(
    not have_valgrind or under_memcheck, reason="needs valgrind, and not to run under it"
)


# ---------------------------------------------------------------------------- command line


def test_script_with_valgrind_options_and_arguments():
    options, target = memcheck.parse_args(["--num-callers=12", "-q", "run.py", "-x", "--y"])
    assert options == ["--num-callers=12", "-q"]
    assert (target.kind, target.target, target.args) == ("script", "run.py", ["-x", "--y"])


@pytest.mark.parametrize("flag, kind", [("-m", "module"), ("-c", "code")])
def test_module_and_code_targets(flag, kind):
    options, target = memcheck.parse_args(["--track-origins=yes", flag, "what", "a1"])
    assert options == ["--track-origins=yes"]
    assert (target.kind, target.target, target.args) == (kind, "what", ["a1"])


def test_double_dash_ends_the_valgrind_options():
    options, target = memcheck.parse_args(["--leak-resolution=high", "--", "-odd-name.py"])
    assert options == ["--leak-resolution=high"]
    assert target.target == "-odd-name.py"


@pytest.mark.parametrize(
    "argv",
    [[], ["--num-callers=3"], ["-m"], ["-c"], ["--xml=yes", "s.py"], ["--tool=helgrind", "s.py"]],
)
def test_bad_command_lines_exit_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        memcheck.parse_args(argv)
    assert exc.value.code == 2
    assert "usage: python -m mtia_graph.memcheck" in capsys.readouterr().err


def test_error_exitcode_is_applied_by_the_launcher():
    options, status = memcheck._error_exit_status(["--error-exitcode=7", "-q"])
    assert options == ["-q"] and status == 7
    assert memcheck._error_exit_status([])[1] == memcheck.FAILURE_EXIT_STATUS


def test_command_runs_the_real_interpreter_with_the_packaged_suppressions():
    target = memcheck.Target("script", "s.py", ["1"])
    cmd = memcheck.valgrind_command("valgrind", ["--num-callers=5"], target, "x.xml", "r.txt")
    supps = [c.split("=", 1)[1] for c in cmd if c.startswith("--suppressions=")]
    assert supps == memcheck.suppression_files()
    assert {os.path.basename(s) for s in supps} >= {"python.supp", "glibc.supp"}
    assert all(os.path.isfile(s) for s in supps)
    # the user's options come after the launcher's, so they win
    assert cmd.index("--num-callers=5") > cmd.index("--num-callers=40")
    exe = cmd[cmd.index("--num-callers=5") + 1]
    with open(os.path.realpath(exe), "rb") as f:
        assert f.read(4) == b"\x7fELF"
    assert cmd[-4:] == ["r.txt", "script", "s.py", "1"]


def test_a_script_interpreter_is_resolved_to_the_binary(tmp_path, monkeypatch):
    shim = tmp_path / "python3"
    shim.write_text('#!/usr/bin/env bash\nexec python3 "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sys, "executable", str(shim))
    exe = memcheck.interpreter()
    assert exe == os.path.realpath("/proc/self/exe")
    with open(exe, "rb") as f:
        assert f.read(4) == b"\x7fELF"


def test_a_venv_interpreter_is_kept():
    # a venv's bin/python (a link to the binary) must stay: it locates the venv
    exe = memcheck.interpreter()
    if sys.prefix != sys.base_prefix:
        assert exe == sys.executable


def test_child_environment_preloads_the_helper_and_uses_malloc(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    env = memcheck._child_environment()
    assert env["PYTHONMALLOC"] == "malloc"
    first, rest = env["LD_PRELOAD"].split(" ", 1)
    assert first.endswith("_memcheck_preload.so") and os.path.isfile(first)
    assert rest == "libother.so"


# ---------------------------------------------------------------------------- reports

XML = """<?xml version="1.0"?>
<valgrindoutput>
<error><unique>0x1</unique><tid>1</tid><kind>InvalidRead</kind>
  <what>Invalid read of size 4</what>
  <stack><frame><ip>0x10</ip><obj>/x/libmtiart.so.0</obj><fn>mt_run</fn>
    <file>exec.c</file><line>12</line></frame></stack>
  <auxwhat>Address 0x5a000000 is 0 bytes inside a block of size 64 free'd</auxwhat>
  <stack><frame><ip>0x20</ip><obj>/x/libmtiart.so.0</obj><fn>mtiart_free</fn></frame></stack>
</error>
<error><unique>0x2</unique><tid>1</tid><kind>Leak_DefinitelyLost</kind>
  <xwhat><text>64 bytes in 1 blocks are definitely lost</text>
    <leakedbytes>64</leakedbytes><leakedblocks>1</leakedblocks></xwhat>
  <stack><frame><ip>0x30</ip><obj>/usr/lib/libpython3.so</obj><fn>PyMem_Malloc</fn></frame>
  </stack>
</error>
<error><unique>0x3</unique><tid>1</tid><kind>Leak_IndirectlyLost</kind>
  <xwhat><text>32 bytes in 2 blocks are indirectly lost</text>
    <leakedbytes>32</leakedbytes><leakedblocks>2</leakedblocks></xwhat>
  <stack><frame><ip>0x40</ip><obj>/lib/libc.so.6</obj><fn>malloc</fn></frame>
    <frame><ip>0x41</ip><obj>/x/libmtiart.so.0</obj><fn>graph_new</fn></frame></stack>
</error>
<errorcounts><pair><count>3</count><unique>0x1</unique></pair></errorcounts>
</valgrindoutput>
"""


def test_errors_are_read_with_counts_stacks_and_leak_sizes(tmp_path):
    path = tmp_path / "m.xml"
    path.write_text(XML)
    read, leak, indirect = memcheck.read_errors(str(path))
    assert (read.kind, read.what, read.count) == ("InvalidRead", "Invalid read of size 4", 3)
    assert [h for h, _ in read.stacks] == [
        "",
        "Address 0x5a000000 is 0 bytes inside a block of size 64 free'd",
    ]
    assert str(read.stacks[0][1][0]) == "0x10: mt_run (exec.c:12)"
    assert str(read.stacks[1][1][0]) == "0x20: mtiart_free (in /x/libmtiart.so.0)"
    assert (leak.leaked_bytes, leak.leaked_blocks, leak.is_leak) == (64, 1, True)
    assert (indirect.leaked_bytes, indirect.in_libmtiart) == (32, True)


def test_verdict_judges_errors_and_libmtiart_leaks_only(tmp_path):
    path = tmp_path / "m.xml"
    path.write_text(XML)
    judged, counted = memcheck.verdict(memcheck.read_errors(str(path)))
    assert [e.kind for e in judged] == ["InvalidRead", "Leak_IndirectlyLost"]
    assert [e.kind for e in counted] == ["Leak_DefinitelyLost"]


def test_exit_report_blocks_and_their_python_sites(tmp_path):
    sep = memcheck._SEP
    path = tmp_path / "r.txt"
    path.write_text(
        f"block 5a000000 4096 0 1 0\n/s/a.py{sep}17{sep}step\n/s/a.py{sep}30{sep}"
        f"<module>\nend\nblock 5a200000 64 1 0 0\nend\n"
    )
    a, b = memcheck.read_exit_report(str(path))
    assert (a.address, a.size, a.device, a.pool) == (0x5A000000, 4096, 0, (1, 0))
    assert a.site == [("/s/a.py", 17, "step"), ("/s/a.py", 30, "<module>")]
    assert (b.device, b.pool, b.site) == (1, (0, 0), [])
    assert memcheck.read_exit_report(str(tmp_path / "missing.txt")) == []


def test_missing_valgrind_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VALGRIND", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert memcheck.main(["script.py"]) == 2
    assert "valgrind not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------- verdicts


def _expectations(script: Path):
    text = script.read_text()
    fields = dict(
        item.split("=")
        for line in re.findall(r"^memcheck-expect: (.*)$", text, re.M)
        for item in line.split()
    )
    logs = re.findall(r"^memcheck-expect-log: (.*)$", text, re.M)
    return fields, logs


def _run(args, tmp_path):
    return subprocess.run(
        [sys.executable, "-m", "mtia_graph.memcheck", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )


SUMMARY = re.compile(
    r"mtia_graph\.memcheck: (?:passed|FAILED): (\d+) errors, ([\d,]+) bytes of "
    r"device memory never freed, ([\d,]+) bytes lost by libmtiart"
)


@needs_valgrind
@pytest.mark.parametrize("script", sorted(SELFTESTS.glob("py_*.py")), ids=lambda p: p.stem)
def test_selftest_program_gets_its_verdict(script, tmp_path):
    fields, logs = _expectations(script)
    assert fields, f"{script.name} states no memcheck-expect line"
    proc = _run([str(script)], tmp_path)
    report = proc.stdout + proc.stderr
    m = SUMMARY.search(report)
    assert m, report[-4000:]
    got = {
        "status": str(proc.returncode),
        "errors": m.group(1),
        "never-freed": m.group(2).replace(",", ""),
        "libmtiart-lost": m.group(3).replace(",", ""),
    }
    assert {k: got[k] for k in fields} == fields, report[-4000:]
    for pattern in logs:
        assert re.search(pattern, report), f"no /{pattern}/ in:\n{report[-4000:]}"


@needs_valgrind
def test_module_target_arguments_and_exit_status_pass_through(tmp_path):
    (tmp_path / "prog.py").write_text(
        textwrap.dedent("""
        import sys
        import mtia_graph as mtia
        x = mtia.ones(16) * 3
        assert x.sum().item() == 48
        sys.exit(int(sys.argv[1]))
        """)
    )
    proc = _run(["-q", "-m", "prog", "5"], tmp_path)
    assert proc.returncode == 5, proc.stderr[-3000:]
    assert "passed: 0 errors, 0 bytes of device memory never freed" in proc.stderr


@needs_valgrind
def test_error_exitcode_sets_the_failure_status(tmp_path):
    code = "import ctypes, mtia_graph as m; ctypes.pythonapi.Py_IncRef(ctypes.py_object(m.ones(8)))"
    proc = _run(["--error-exitcode=3", "-c", code], tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert re.search(r'File "<string>", line 1, in <module>', proc.stderr)

"""No input can add a Dockerfile instruction or a shell command: every parameter, fuzzed.

Each value either raises InvalidLayerArgument naming the parameter, or renders a Dockerfile with
as many instructions as a harmless value gives, from which the value reads back exactly: with
BuildKit's rules for ENV/WORKDIR double quotes and JSON-form COPY words (checked against a real
engine in test_engine_context.py), JSON for RUN, and the real /bin/sh for shell arguments.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flyte_images import Image, InvalidLayerArgument, Secret
from flyte_images._plan.plan import plan as render

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10000"))
BASE = Image.from_debian_base(python_version=(3, 11), install_flyte=False)
SPECIALS = [
    "\n", "\r", "\r\n", '"', "'", "\\", "$", "$(id)", "`id`", "${HOME}", "$HOME", "\x00", "\t",
    "\u2028", "\x85", " ", "#", "\nRUN id", "[", "]", ",", "=", "\\\n", "&&", ";", "|", "é", "\ud800",
]  # fmt: skip
PRINTABLE_SPECIALS = [x for x in SPECIALS if not any(ord(c) < 32 or c == "\ud800" for c in x)]
anything = st.lists(
    st.one_of(st.text(alphabet=st.characters(), max_size=4), st.sampled_from(SPECIALS)), max_size=6
).map("".join)
printable = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(min_codepoint=32, exclude_characters="\x7f"), max_size=4),
        st.sampled_from(PRINTABLE_SPECIALS),
    ),
    min_size=1,
    max_size=6,
).map("".join)
values = st.one_of(anything, printable, printable.map(lambda v: "https://h.example/" + v))


# ----- a reader of what BuildKit reads ------------------------------------------------------


def instructions(dockerfile: str) -> list[str]:
    """Instructions as BuildKit splits them: lines, joined where one ends with a backslash."""
    out: list[str] = []
    pending = ""
    for line in dockerfile.split("\n"):
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        out.append(pending + line)
        pending = ""
    assert not pending, "a continuation runs off the end"
    return out


def layer_instructions(dockerfile: str) -> list[str]:
    """`instructions`, less the `USER flyte` the Debian base ends every Dockerfile with: the
    layer under test renders just before it."""
    out = instructions(dockerfile)
    return out[:-1] if out and out[-1] == "USER flyte" else out


def read_double_quoted(text: str) -> str:
    """BuildKit's reading of "..." in ENV/WORKDIR: \\\\, \\" and \\$ are escapes; no bare $."""
    assert text.startswith('"') and text.endswith('"') and len(text) >= 2, text
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in '\\"$':
            out.append(body[i + 1])
            i += 2
            continue
        assert ch not in '"$', f"unescaped {ch!r} in {text!r}"
        out.append(ch)
        i += 1
    return "".join(out)


def read_copy_word(word: str) -> str:
    """BuildKit's reading of one JSON-form COPY element: a backslash escapes any character."""
    out, i = [], 0
    while i < len(word):
        if word[i] == "\\":
            out.append(word[i + 1])
            i += 2
            continue
        assert word[i] not in "\"'$", f"unescaped {word[i]!r} in {word!r}"
        out.append(word[i])
        i += 1
    return "".join(out)


def run_script(instruction: str) -> tuple[list[str], str]:
    """(mount flags, script) of an exec-form RUN."""
    assert instruction.startswith("RUN ")
    rest = instruction[4:].strip()
    start = rest.index('["/bin/sh"')
    flags = rest[:start].split()
    argv = json.loads(rest[start:])
    assert argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3
    return flags, argv[2]


_VAR_REF = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})")


def marker(name: str) -> str:
    return f"<var {name}>"


def expanded(value: str) -> str:
    """`value` with each $NAME / ${NAME} reference replaced by NAME's marker."""
    return _VAR_REF.sub(lambda m: marker(m.group(1) or m.group(2)), value)


def uv_args_via_sh(script: str) -> list[str]:
    """The arguments `uv` receives when /bin/sh runs the script (uv stubbed; every variable set
    to a marker, so an expansion shows where it happened)."""
    env = {m.group(1) or m.group(2): "" for m in _VAR_REF.finditer(script)}
    env = {name: marker(name) for name in env}
    stub = "uv() { printf '%s\\0' \"$@\"; }\n"
    result = subprocess.run(
        ["/bin/sh", "-c", stub + script],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        check=True,
    )
    return result.stdout.decode("utf-8", "surrogateescape").split("\0")[:-1]


# ----- the parameters ----------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str  # the parameter an error must name
    make: Callable[[str], Image]
    read: Callable[[str], object]  # the last instruction -> what the value became
    expect: Callable[[str], object] = lambda v: v


def _env_value(ins: str) -> str:
    match = re.fullmatch(r'ENV A=(".*")', ins, re.S)
    assert match, ins
    return read_double_quoted(match.group(1))


def _env_name(ins: str) -> str:
    match = re.fullmatch(r'ENV ([A-Za-z_][A-Za-z0-9_]*)="1"', ins)
    assert match, ins
    return match.group(1)


def _workdir(ins: str) -> str:
    assert ins.startswith("WORKDIR ")
    return read_double_quoted(ins[len("WORKDIR ") :])


def _copy_dest(ins: str) -> str:
    assert ins.startswith("COPY ")
    words = ins[5:].removeprefix("--chown=flyte:flyte ")  # the Debian base's user owns copies
    return read_copy_word(json.loads(words)[1])


def _command(ins: str) -> str:
    return run_script(ins)[1]


def _uv_tail(count: int) -> Callable[[str], list[str]]:
    return lambda ins: uv_args_via_sh(run_script(ins)[1])[-count:]


def _uv_option(option: str) -> Callable[[str], str]:
    def read(ins: str) -> str:
        args = uv_args_via_sh(run_script(ins)[1])
        return args[args.index(option) + 1]

    return read


def _apt_names(ins: str) -> list[str]:
    return shlex.split(run_script(ins)[1].rsplit("--no-install-recommends ", 1)[1])


def _secret_flag(ins: str) -> dict[str, str]:
    flags, _ = run_script(ins)
    secret = [f for f in flags if f.startswith("--mount=type=secret,")]
    assert len(secret) == 1, flags
    return dict(part.split("=", 1) for part in secret[0][len("--mount=") :].split(","))


def _extra_args(ins: str) -> list[str]:
    args = uv_args_via_sh(run_script(ins)[1])
    return args[args.index("install") + 1 : -1]


PARAMS = [
    Param("env_vars", lambda v: BASE.with_env_vars({"A": v}), _env_value),
    Param("env_vars", lambda v: BASE.with_env_vars({v: "1"}), _env_name),
    Param("workdir", BASE.with_workdir, _workdir),
    Param("commands", lambda v: BASE.with_commands([v]), _command),
    Param("dst", lambda v: BASE.with_source_file(Path(__file__), dst=v), _copy_dest,
          lambda v: v if v.endswith("/") else v + "/"),
    Param("packages", BASE.with_pip_packages, _uv_tail(1), lambda v: [expanded(v.strip())]),
    Param("packages", BASE.with_apt_packages, _apt_names, lambda v: [v.strip()]),
    Param("index_url", lambda v: BASE.with_pip_packages("x", index_url=v), _uv_option("--index-url"),
          lambda v: expanded(v.strip())),
    Param("extra_index_urls", lambda v: BASE.with_pip_packages("x", extra_index_urls=[v]),
          _uv_option("--extra-index-url"), lambda v: expanded(v.strip())),
    Param("extra_args", lambda v: BASE.with_pip_packages("x", extra_args=v), _extra_args,
          lambda v: shlex.split(v.strip())),
    Param("Secret.key", lambda v: BASE.with_commands(["true"], secret_mounts=Secret(v, mount=Path("/s"))),
          lambda ins: _secret_flag(ins)["id"]),
    Param("Secret.mount", lambda v: BASE.with_commands(["true"], secret_mounts=Secret("k", mount=Path(v))),
          lambda ins: _secret_flag(ins)["target"], lambda v: Path(v).as_posix()),
    Param("Secret.as_env_var", lambda v: BASE.with_commands(["true"], secret_mounts=Secret("k", as_env_var=v)),
          lambda ins: run_script(ins)[1].split("=", 1)[0]),
]  # fmt: skip
HARMLESS = {
    "Secret.mount": "/run/s",
    "index_url": "https://x.example/simple",
    "extra_index_urls": "https://x.example/simple",
    "Secret.as_env_var": "X",
}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(param=st.sampled_from(PARAMS), value=values)
def test_no_value_escapes_its_place(param: Param, value: str) -> None:
    try:
        image = param.make(value)
        rendered = render(image).dockerfile
    except InvalidLayerArgument as exc:
        assert exc.parameter == param.name, (exc.parameter, param.name, value)
        event(f"{param.name}: refused")
        return
    event(f"{param.name}: rendered")
    harmless = render(param.make(HARMLESS.get(param.name, "x"))).dockerfile
    got, want = layer_instructions(rendered), layer_instructions(harmless)
    assert len(got) == len(want), (value, got[len(want) - 1 :])
    assert rendered.count("\n") == harmless.count("\n")
    assert param.read(got[-1]) == param.expect(value), value


@pytest.mark.parametrize(
    "value",
    ["$(touch /tmp/pwned)", "`touch /tmp/pwned`", "a'; touch /tmp/pwned; '", 'x"; touch /tmp/pwned; "'],
)
def test_package_strings_cannot_run_commands(value: str, tmp_path: Path) -> None:
    script = run_script(layer_instructions(render(BASE.with_pip_packages(value)).dockerfile)[-1])[1]
    assert uv_args_via_sh(script)[-1] == value
    assert not Path("/tmp/pwned").exists()


def test_secret_references_in_package_urls_still_expand() -> None:
    script = run_script(layer_instructions(render(BASE.with_pip_packages("git+https://$TOKEN@h/x")).dockerfile)[-1])[1]
    result = subprocess.run(
        ["/bin/sh", "-c", "uv() { printf '%s' \"$@\"; }\n" + script],
        env={"TOKEN": "abc"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.endswith("git+https://abc@h/x")


@pytest.mark.parametrize("mount", ["/a b", "/a\u2028b", "/a\u00a0b", "/a,b", '/a"b', "/a'b"])
def test_secret_mount_paths_cannot_split_the_mount_flag(mount: str) -> None:
    with pytest.raises(InvalidLayerArgument) as info:
        Secret("k", mount=Path(mount))
    assert info.value.parameter == "Secret.mount"

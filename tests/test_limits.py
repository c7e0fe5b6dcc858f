"""Inputs that only the engine would refuse, refused where they are given, and the words a
failure ends with: an index URL that cannot be parsed (without a piece of its password), a
Dockerfile line over BuildKit's 65535 bytes, and the TLS hint next to a tool's own hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from flyte_images import Image, Secret
from flyte_images._build.hints import add_hint
from flyte_images._cli import main
from flyte_images._errors import InvalidLayerArgument, StepFailedError
from flyte_images._formats.dockerfile import MAX_LINE_BYTES, RenderOptions
from flyte_images._plan.plan import plan

BASE = Image.from_debian_base(python_version=(3, 12), install_flyte=False, name="app")
# A pasted base64 token holds '/' and '+': unescaped, the '/' ends the host part of the URL.
TOKEN_URL = "http://user:abc-77/bb+cc@host/simple"
FRAGMENTS = ("abc-77", "bb+cc", "abc", "bb")


# ----- index URLs that cannot be parsed ---------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        TOKEN_URL,  # the port would be 'abc-77'
        "http://user:77/bb+cc@host/simple",  # parses, as the host 'user' with port 77
        "https://user:abc#bb+cc@host/simple",
        "https://user:77?bb+cc@host/simple",
    ],
)
def test_an_index_url_with_an_unescaped_password_is_refused_without_it(url: str) -> None:
    for make in (
        lambda: BASE.with_pip_packages("requests", index_url=url),
        lambda: BASE.with_pip_packages("requests", extra_index_urls=[url]),
        lambda: BASE.with_uv_project(Path("pyproject.toml"), index_url=url),
    ):
        with pytest.raises(InvalidLayerArgument) as caught:
            make()
        message = str(caught.value)
        assert "http" in message and "***@host" in message and "percent-encoded" in message
        assert not any(fragment in message for fragment in FRAGMENTS), message
    # The fix the message gives: the same token percent-encoded is an index URL like any other.
    image = BASE.with_pip_packages("requests", index_url="http://user:abc-77%2Fbb%2Bcc@host/simple")
    assert "abc-77" not in image._layers[-1].describe() and "host/simple" in image._layers[-1].describe()


def test_every_message_about_an_index_url_masks_its_credentials() -> None:
    for bad in ("https://user:s3cr3t@host/sim ple", "ftp://user:s3cr3t@host/simple", "https://user:s3cr3t\0@host"):
        with pytest.raises(InvalidLayerArgument) as caught:
            BASE.with_pip_packages("requests", index_url=bad)
        assert "s3cr3t" not in str(caught.value) and "***@host" in str(caught.value)
    # Other values may hold a URL with credentials too: a requirement, extra_args.
    for make in (
        lambda: BASE.with_pip_packages("pkg @ https://user:s3cr3t@host/pkg.whl\0"),
        lambda: BASE.with_pip_packages("-i https://user:s3cr3t@host/simple"),
        lambda: BASE.with_pip_packages("x", extra_args="--index-url https://user:s3cr3t@host/simple\n"),
    ):
        with pytest.raises(InvalidLayerArgument) as caught:
            make()
        assert "s3cr3t" not in str(caught.value) and "***@host" in str(caught.value)


@pytest.mark.parametrize("command", [["id"], ["dockerfile"], ["build", "--dry-run"]])
def test_the_cli_refuses_such_a_url_in_one_line_without_the_password(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images.py").write_text(
        "from flyte_images import Image\n"
        "app = Image.from_debian_base(python_version=(3, 12), install_flyte=False, name='app')"
        f".with_pip_packages('requests', index_url={TOKEN_URL!r})\n"
    )
    code = main([*command, str(tmp_path / "images.py")])  # a traceback would raise out of main
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
    assert "Traceback" not in captured.err and "index_url" in captured.err
    assert not any(fragment in captured.out + captured.err for fragment in FRAGMENTS), captured.err


# ----- Dockerfile lines over BuildKit's limit ---------------------------------------------------


def test_an_env_value_too_long_for_one_dockerfile_line_is_refused_where_it_is_given() -> None:
    with pytest.raises(InvalidLayerArgument) as caught:
        BASE.with_env_vars({"BIG": "x" * 100_000})
    message = str(caught.value)
    assert "BIG=" in message and str(MAX_LINE_BYTES) in message and "100000 characters" in message
    assert "x" * 100 not in message and len(message) < 400


def test_env_vars_that_together_exceed_the_line_are_told_to_split() -> None:
    with pytest.raises(InvalidLayerArgument, match="split them over several with_env_vars calls"):
        BASE.with_env_vars({f"V{i}": "x" * 10_000 for i in range(8)})
    for i in range(8):  # one call each fits
        BASE.with_env_vars({f"V{i}": "x" * 10_000})


def test_the_env_limit_is_the_rendered_line_exactly() -> None:
    # `ENV A="..."`: the line is the value plus 8 bytes; BuildKit takes 65535 and refuses 65536.
    fits = BASE.with_env_vars({"A": "x" * (MAX_LINE_BYTES - 8)})
    assert _longest_line(fits) == MAX_LINE_BYTES
    with pytest.raises(InvalidLayerArgument):
        BASE.with_env_vars({"A": "x" * (MAX_LINE_BYTES - 7)})
    with pytest.raises(InvalidLayerArgument):  # quoting doubles a backslash; UTF-8 counts bytes
        BASE.with_env_vars({"A": "\\" * 33_000})
    with pytest.raises(InvalidLayerArgument):
        BASE.with_env_vars({"A": "é" * 33_000})


def test_a_command_or_workdir_too_long_for_one_line_is_refused() -> None:
    with pytest.raises(InvalidLayerArgument, match=r"commands: command 2 'echo xxx.*65535"):
        BASE.with_commands(["true", "echo " + "x" * 70_000])
    with pytest.raises(InvalidLayerArgument, match="65535"):  # non-ASCII is six bytes in the JSON form
        BASE.with_commands(["echo " + "é" * 12_000])
    with pytest.raises(InvalidLayerArgument, match=r"workdir: '/xxx.*65535"):
        BASE.with_workdir("/" + "x" * 70_000)
    secret = Secret("pip-token", as_env_var="PIP_TOKEN")
    long_but_fine = BASE.with_commands(["echo " + "x" * 64_800], secret_mounts=[secret])
    assert MAX_LINE_BYTES - 1000 < _longest_line(long_but_fine, ca_bundle=True) <= MAX_LINE_BYTES


def _longest_line(image: Image, ca_bundle: bool = False) -> int:
    dockerfile = plan(image, RenderOptions(ca_bundle=ca_bundle)).dockerfile
    return max(len(line.encode()) for line in dockerfile.splitlines())


# ----- hints --------------------------------------------------------------------------------------


def test_the_ca_bundle_hint_is_added_after_the_tools_own_hint_and_only_once() -> None:
    error = StepFailedError(
        "step 4/6 failed: uv pip install requests\n"
        "error: invalid peer certificate: UnknownIssuer\n"
        "hint: Consider enabling use of system TLS certificates with the `--system-certs` command-line flag"
    )
    add_hint(error)
    add_hint(error)
    text = str(error)
    assert "--ca-bundle" in text and text.count("--ca-bundle") == 1
    assert text.count("\nhint: ") == 2 and "--system-certs" in text


def test_any_rendered_line_over_the_limit_is_refused_before_a_build() -> None:
    """Inputs that render into one line without a check of their own (a package list) are
    caught by the renderer: the build never reaches BuildKit's parser."""
    names = [f"package-number-{n:05d}" for n in range(4000)]  # ~96,000 bytes on one line
    image = BASE.with_pip_packages(*names)
    with pytest.raises(InvalidLayerArgument, match=r"over BuildKit's limit of 65535 bytes") as caught:
        plan(image)
    assert len(str(caught.value)) < 400  # a prefix of the line, not the line


def test_a_trailing_line_break_is_no_part_of_a_valid_name() -> None:
    """`$` in a pattern also matches before a final newline: names are checked to their end."""
    for make in (
        lambda: Secret(key="token\n"),
        lambda: Secret(key="/tmp/secret\n", as_env_var="TOKEN"),
        lambda: BASE.with_env_vars({"A\n": "1"}),
        lambda: BASE.with_apt_packages("git\n"),
    ):
        with pytest.raises(InvalidLayerArgument):
            make()

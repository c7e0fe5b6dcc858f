"""builders.output: redaction of secret values and parsing of BuildKit plain progress."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from flyte_images.builders.base import ProgressEvent
from flyte_images.builders.output import TAIL_LINES, BuildOutput, Redactor, redaction_patterns

# What `docker buildx build --progress plain` printed for a step that printed a secret and failed.
FAILED_BUILD = """\
#0 building with "default" instance using docker driver

#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 194B 0.0s done
#1 DONE 0.0s

#4 [1/3] FROM docker.io/flyte-images/busybox:test
#4 CACHED

#6 [2/3] COPY [a.txt, /data/]
#6 DONE 0.0s

#7 [3/3] RUN ["/bin/sh", "-c", "echo start\\ncat /run/secrets/tok\\nexit 3"]
#7 0.422 start
#7 0.428 s3cr3tvalue
#7 ERROR: executor failed running [/bin/sh -c echo start
cat /run/secrets/tok
exit 3]: exit code: 3
------
 > [3/3] RUN ["/bin/sh", "-c", "echo start\\ncat /run/secrets/tok\\nexit 3"]:
0.422 start
0.428 s3cr3tvalue
------
ERROR: failed to solve: executor failed running [/bin/sh -c echo start
cat /run/secrets/tok
exit 3]: exit code: 3
"""

PEM = "-----BEGIN KEY-----\nMIIBVwIBADANBgkq\nab\n\n==\nhkiG9w0BAQEFAASC\n-----END KEY-----\n"


def feed_all(text: str, redact: tuple[str, ...] = ()) -> tuple[BuildOutput, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    output = BuildOutput(redact, events.append)
    for line in text.splitlines(keepends=True):
        output.feed(line)
    return output, events


# ----- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["x", "ab", "s3cr3t", "a value with spaces"])
def test_a_whole_value_of_any_length_is_redacted(value: str) -> None:
    assert Redactor((value,))(f"before {value} after") == "before *** after"


def test_a_value_with_a_trailing_newline_is_redacted_with_and_without_it() -> None:
    redact = Redactor(("token-123\n",))
    assert redact("token-123\n") == "***"
    assert redact("x token-123 y") == "x *** y"
    assert Redactor(("  padded-value \t\n",))("is padded-value.") == "is ***."


def test_each_line_of_a_multiline_value_is_redacted_on_its_own() -> None:
    redact = Redactor((PEM,))
    assert redact("#7 0.1 MIIBVwIBADANBgkq") == "#7 0.1 ***"
    assert redact("-----END KEY-----") == "***"
    assert redact(PEM) == "***"


def test_short_and_blank_lines_of_a_multiline_value_are_not_redacted_alone() -> None:
    patterns = redaction_patterns((PEM,))
    assert "ab" not in patterns and "==" not in patterns and "" not in patterns
    assert Redactor((PEM,))("a == b, ab") == "a == b, ab"


def test_longer_values_are_replaced_first() -> None:
    redact = Redactor(("abc", "abcdef"))
    assert redact("abcdef abc") == "*** ***"
    patterns = redaction_patterns(("abc", "abcdef"))
    assert patterns.index("abcdef") < patterns.index("abc")
    assert [len(p) for p in patterns] == sorted((len(p) for p in patterns), reverse=True)


def test_empty_values_and_no_values_change_nothing() -> None:
    assert Redactor(("",))("some output") == "some output"
    assert Redactor(())("some output") == "some output"


@given(st.text(min_size=1), st.text(), st.text())
def test_no_value_survives_redaction(value: str, before: str, after: str) -> None:
    assume("*" not in value)  # a value made of stars is found again in the replacement itself
    assert value not in Redactor((value,))(before + value + after)


# ----- parsing ---------------------------------------------------------------------------------


def test_every_line_becomes_one_event_with_the_raw_line() -> None:
    _, events = feed_all(FAILED_BUILD)
    assert [e.line for e in events] == FAILED_BUILD.splitlines()


def test_step_titles_start_steps_and_output_lines_belong_to_them() -> None:
    _, events = feed_all(FAILED_BUILD)
    steps = [e.step for e in events if e.kind == "step"]
    assert steps == [
        'building with "default" instance using docker driver',
        "[internal] load build definition from Dockerfile",
        "[1/3] FROM docker.io/flyte-images/busybox:test",
        "[2/3] COPY [a.txt, /data/]",
        '[3/3] RUN ["/bin/sh", "-c", "echo start\\ncat /run/secrets/tok\\nexit 3"]',
    ]
    start = next(e for e in events if e.text == "start")
    assert start.kind == "log" and start.step.startswith("[3/3] RUN") and start.line == "#7 0.422 start"
    done = next(e for e in events if e.line == "#6 DONE 0.0s")
    assert (done.kind, done.step, done.text) == ("log", "[2/3] COPY [a.txt, /data/]", "DONE 0.0s")
    summary = next(e for e in events if e.line.startswith("ERROR: failed to solve"))
    assert (summary.kind, summary.step) == ("log", "")


def test_the_failed_step_its_exit_code_and_tail_are_remembered() -> None:
    output, events = feed_all(FAILED_BUILD, redact=("s3cr3tvalue",))
    assert output.failed_step.startswith("[3/3] RUN")
    assert output.exit_code == 3
    assert output.tail() == "start\n***"
    assert "exit code: 3" in output.failed_error and "cat /run/secrets/tok" in output.failed_error
    error = output.step_failed()
    assert (error.step, error.exit_code, error.tail) == (output.failed_step, 3, "start\n***")
    assert "exit code 3" in str(error) and "s3cr3tvalue" not in str(error)
    assert not any("s3cr3tvalue" in e.line or "s3cr3tvalue" in e.text for e in events)


def test_a_repeated_title_is_not_a_new_step() -> None:
    _, events = feed_all("#5 [2/3] RUN make\n#5 0.1 a\n#6 [3/3] RUN b\n#5 [2/3] RUN make\n#5 0.2 c\n")
    assert [e.step for e in events if e.kind == "step"] == ["[2/3] RUN make", "[3/3] RUN b"]
    assert [e.step for e in events if e.text == "c"] == ["[2/3] RUN make"]


def test_the_tail_keeps_the_last_lines_of_each_step() -> None:
    lines = "".join(f"#3 {i}.000 line {i}\n" for i in range(TAIL_LINES + 10))
    output, _ = feed_all("#3 [1/1] RUN x\n" + lines + "#4 [internal] other\n#4 0.1 elsewhere\n")
    tail = output.tail("[1/1] RUN x").splitlines()
    assert len(tail) == TAIL_LINES and tail[-1] == f"line {TAIL_LINES + 9}"
    assert output.tail("[internal] other") == "elsewhere"
    assert output.tail() == "" and output.failed_step == "" and output.exit_code is None


def test_a_chunk_of_several_lines_is_split_and_a_multiline_value_hidden_whole() -> None:
    events: list[ProgressEvent] = []
    output = BuildOutput((PEM,), events.append)
    output.feed("#2 [1/1] RUN cat key\n#2 0.1 " + PEM)
    assert all("MIIB" not in e.line and "BEGIN KEY" not in e.line for e in events)
    assert events[0].kind == "step" and events[1].line == "#2 0.1 ***"


def test_program_output_is_not_taken_for_an_exit_code() -> None:
    output, _ = feed_all("#2 [1/1] RUN x\n#2 0.1 exit code: 9\n")
    assert output.exit_code is None


def test_redact_hides_values_in_exception_text() -> None:
    output = BuildOutput(("hunter2",), lambda _e: None)
    assert output.redact("docker said: password hunter2 is wrong") == "docker said: password *** is wrong"
    assert "hunter2" not in str(output.step_failed("failed with hunter2"))


def test_the_base64_and_hex_forms_of_a_secret_are_redacted_too() -> None:
    import base64

    value = "s3cret-token"
    printed = base64.b64encode((value + "\n").encode()).decode()  # what `echo $TOKEN | base64` shows
    assert Redactor((value,))(f"b64 {printed} hex {value.encode().hex()}") == "b64 *** hex ***"

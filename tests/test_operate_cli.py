"""The operator's commands -- ``status``, ``tail``, ``subscriptions``, ``--version`` and a
careful ``drop`` -- run as real subprocesses against the real database."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time

import pytest

from sqlalchemy_eventstore import ALL_STREAM, EventData, __version__, commands
from sqlalchemy_eventstore.commands import CommandError

from .parked_helpers import park_numbers, subscription_id
from .test_cli import EVENTSTORE, assert_failed, assert_ok, run, url_text


@pytest.fixture
def busy_store(make_store):
    """Five events in two streams; "projector" on $all at 2, 1 parked; "audit" on acct-1 at 0."""
    store = make_store()
    store.append_to_stream(
        "acct-1", 0, [EventData("Opened", {"n": 1}), EventData("Paid", {"n": 2})]
    )
    store.append_to_stream("acct-2", 0, [EventData("Opened", {"n": i}) for i in (3, 4, 5)])
    park_numbers(store, "projector", [2])
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            f'UPDATE "{store.schema}".subscriptions SET last_seen = 2 '
            "WHERE subscription_name = 'projector'"
        )
    subscription_id(store, "audit", "acct-1")
    return store


def args_for(store, database_url) -> list[str]:
    return ["--url", url_text(database_url), "--schema", store.schema]


def test_version() -> None:
    out = assert_ok(run("--version"))
    assert out.strip() == f"eventstore {__version__}"


def test_status_answers_how_far_behind_and_what_is_stuck(busy_store, database_url) -> None:
    out = assert_ok(run("status", *args_for(busy_store, database_url)))
    assert "$all head: 5   streams: 2" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[4:] if line.strip()}
    # name, stream, checkpoint, lag, parked, state
    assert rows["projector"][:6] == ["projector", "$all", "2", "3", "1", "stopped"]
    assert rows["audit"][:6] == ["audit", "acct-1", "0", "2", "0", "stopped"]

    document = json.loads(assert_ok(run("status", "--json", *args_for(busy_store, database_url))))
    assert (document["head"], document["streams"], document["schema"]) == (5, 2, busy_store.schema)
    on_psycopg3 = database_url.set(drivername="postgresql+psycopg")
    again = json.loads(assert_ok(run("status", "--json", *args_for(busy_store, on_psycopg3))))
    for subscription in document["subscriptions"] + again["subscriptions"]:
        assert subscription.pop("pending_age") >= 0  # time passes between the two
    assert again == document
    by_name = {s["subscription_name"]: s for s in document["subscriptions"]}
    assert by_name["projector"]["lag"] == 3
    assert by_name["projector"]["parked"] == 1
    assert by_name["audit"] == by_name["audit"] | {"stream_uuid": "acct-1", "lag": 2, "head": 2}


def test_status_max_lag_is_a_health_check(busy_store, database_url) -> None:
    args = args_for(busy_store, database_url)
    # projector is 3 behind, audit 2.
    out = assert_ok(run("status", "--max-lag", "3", *args))
    assert "projector" in out
    behind = run("status", "--max-lag", "2", *args)
    line = assert_failed(behind, "1 subscription more than 2 events behind", '"projector" on $all')
    assert behind.returncode == 1 and "audit" not in line
    assert "$all head: 5" in behind.stdout  # the status is printed all the same
    both = run("status", "--json", "--max-lag", "0", *args)
    assert_failed(both, "2 subscriptions", '"audit" on acct-1 (2 behind)', "(3 behind)")
    assert json.loads(both.stdout)["head"] == 5
    # The oldest waiting event's age, by the server's clock.
    by_name = {s["subscription_name"]: s for s in json.loads(both.stdout)["subscriptions"]}
    assert by_name["projector"]["pending_age"] >= 0
    assert_failed(run("status", "--max-lag", "-1", *args), "--max-lag must be")
    usage = run("status", "--max-lag", "many", *args)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    with pytest.raises(CommandError, match="more than 1 event behind"):
        commands.status(database_url, busy_store.schema, quiet=True, max_lag=1)
    assert commands.status(database_url, busy_store.schema, quiet=True, max_lag=3).head == 5


def test_status_of_caught_up_subscriptions_passes_max_lag_zero(make_store, database_url) -> None:
    store = make_store()
    store.append_to_stream("s", 0, [EventData("E", {"n": n}) for n in range(3)])
    sub = store.subscribe_to_all_streams("projector", buffer_size=10)
    sub.ack(sub.receive(timeout=10))
    sub.unsubscribe()
    document = json.loads(
        assert_ok(run("status", "--json", "--max-lag", "0", *args_for(store, database_url)))
    )
    (projector,) = document["subscriptions"]
    assert (projector["lag"], projector["pending_age"]) == (0, None)


def test_status_shows_a_running_subscriber(busy_store, database_url) -> None:
    seen: list[int] = []
    sub = busy_store.subscribe_to_all_streams(
        "projector", handler=lambda events: seen.extend(e.event_number for e in events)
    )
    assert sub.wait_subscribed(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        document = json.loads(
            assert_ok(run("status", "--json", *args_for(busy_store, database_url)))
        )
        projector = next(
            s for s in document["subscriptions"] if s["subscription_name"] == "projector"
        )
        if projector["lag"] == 0:
            break
        time.sleep(0.2)
    assert projector["running"] is True
    assert isinstance(projector["holder_pid"], int)
    assert projector["lag"] == 0
    # Reset and delete are refused while it runs: the runner would overwrite them.
    assert_failed(
        run(
            "subscriptions", "reset", "projector", "--to", "0", *args_for(busy_store, database_url)
        ),
        "is running",
    )
    assert_failed(
        run("subscriptions", "delete", "projector", *args_for(busy_store, database_url)),
        "is running",
    )
    sub.unsubscribe()


def test_subscriptions_list_reset_delete(busy_store, database_url) -> None:
    common = args_for(busy_store, database_url)
    out = assert_ok(run("subscriptions", *common))
    assert out.splitlines()[0].split() == [
        "subscription",
        "stream",
        "checkpoint",
        "lag",
        "parked",
        "state",
        "behind",
        "for",
    ]
    lines = [
        json.loads(line)
        for line in assert_ok(run("subscriptions", "list", "--json", *common)).splitlines()
    ]
    assert sorted((s["subscription_name"], s["last_seen"], s["lag"]) for s in lines) == [
        ("audit", 0, 2),
        ("projector", 2, 3),
    ]

    out = assert_ok(run("subscriptions", "reset", "projector", "--to", "0", *common))
    assert "reset from 2 to 0" in out
    out = assert_ok(
        run("subscriptions", "reset", "audit", "--stream", "acct-1", "--to", "2", *common)
    )
    assert "reset from 0 to 2" in out
    infos = {
        i.subscription_name: i
        for i in commands.subscriptions_list(url_text(database_url), busy_store.schema, quiet=True)
    }
    assert (infos["projector"].last_seen, infos["projector"].lag) == (0, 5)
    assert (infos["audit"].last_seen, infos["audit"].lag) == (2, 0)

    # A reset past the head would skip events; an unknown name is a failure.
    assert_failed(
        run("subscriptions", "reset", "projector", "--to", "6", *common), "head of $all is 5"
    )
    assert_failed(
        run("subscriptions", "reset", "nobody", "--to", "0", *common), 'no subscription "nobody"'
    )
    assert_failed(run("subscriptions", "reset", "projector", *common), "--to")

    out = assert_ok(run("subscriptions", "delete", "projector", *common))
    assert 'Subscription "projector" to $all deleted.' in out
    assert busy_store.parked_events("projector") == []
    remaining = commands.subscriptions_list(url_text(database_url), busy_store.schema, quiet=True)
    assert [i.subscription_name for i in remaining] == ["audit"]
    assert_failed(
        run("subscriptions", "delete", "projector", *common), 'no subscription "projector"'
    )
    # A store without subscriptions says so.
    assert_ok(run("subscriptions", "delete", "audit", "--stream", "acct-1", *common))
    assert "has no subscriptions" in assert_ok(run("subscriptions", *common))


def test_status_of_a_schema_without_an_event_store(database_url) -> None:
    assert_failed(
        run("status", "--url", url_text(database_url), "--schema", "no_such_schema"),
        "eventstore init",
    )
    with pytest.raises(CommandError, match="eventstore init"):
        commands.status(database_url, "no_such_schema", quiet=True)


# -- drop --------------------------------------------------------------------------------


def test_drop_refuses_without_yes_when_not_on_a_terminal(make_store, database_url) -> None:
    store = make_store()
    common = args_for(store, database_url)
    line = assert_failed(run("drop", *common), "without --yes", "not a terminal")
    assert store.schema in line
    assert store.stream_info(ALL_STREAM).stream_version == 0  # still there
    out = assert_ok(run("drop", "--yes", *common))
    assert f'The EventStore schema "{store.schema}" has been dropped.' in out


def test_drop_fails_on_a_schema_that_does_not_exist(database_url) -> None:
    common = ["--url", url_text(database_url), "--schema", "no_such_schema", "--yes"]
    assert_failed(run("drop", *common), 'schema "no_such_schema" does not exist')
    assert "nothing to drop" in assert_ok(run("drop", "--if-exists", *common))
    with pytest.raises(CommandError, match="does not exist"):
        commands.drop(database_url, "no_such_schema", quiet=True)


def test_drop_asks_on_a_terminal(make_store, database_url) -> None:
    """On a terminal, drop asks: "n" keeps the schema, "y" drops it."""
    import pty

    store = make_store()
    common = args_for(store, database_url)

    def answer(reply: bytes) -> tuple[int, str]:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the command, its stdin a terminal
            env = {k: v for k, v in os.environ.items() if k != "EVENTSTORE_URL"}
            os.execve(EVENTSTORE[0], [*EVENTSTORE, "drop", *common], env)
        output = b""
        deadline = time.monotonic() + 60
        while b"[y/N]" not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                output += os.read(fd, 1024)
        os.write(fd, reply + b"\n")
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), output.decode(errors="replace")

    code, output = answer(b"n")
    assert code == 1, output
    assert "not confirmed" in output
    assert store.stream_info(ALL_STREAM).stream_version == 0
    code, output = answer(b"y")
    assert code == 0, output
    assert "has been dropped" in output


# -- tail ------------------------------------------------------------------------------------


def start_tail(database_url, schema: str, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "EVENTSTORE_URL"}
    env["EVENTSTORE_URL"] = url_text(database_url)
    process = subprocess.Popen(
        [*EVENTSTORE, "tail", "--schema", schema, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # It says on stderr once subscribed: events appended after that are shown.
    assert process.stderr is not None
    line = read_line(process.stderr, 60)
    assert line.startswith("Following "), line
    return process


def read_line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "nothing printed in time"
    return stream.readline()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_tail_prints_events_as_they_are_appended(make_store, database_url, stop) -> None:
    store = make_store()
    store.append_to_stream("before", 0, [EventData("Old", {"n": 0})])  # not shown
    process = start_tail(database_url, store.schema, "--json")
    try:
        assert process.stdout is not None
        store.append_to_stream("acct-1", 0, [EventData("Opened", {"owner": "<Ada>"})])
        first = json.loads(read_line(process.stdout, 30))
        assert first | {"event_id": None, "created_at": None} == first | {
            "stream_uuid": "acct-1",
            "event_number": 2,
            "stream_version": 1,
            "event_type": "Opened",
            "data": {"owner": "<Ada>"},
            "event_id": None,
            "created_at": None,
        }
        # Each event as it arrives, not when a buffer fills.
        store.append_to_stream("acct-2", 0, [EventData("Paid", {"amount": 5})])
        second = json.loads(read_line(process.stdout, 30))
        assert (second["stream_uuid"], second["event_number"], second["data"]) == (
            "acct-2",
            3,
            {"amount": 5},
        )
        process.send_signal(stop)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out == ""
    assert "Traceback" not in err


def test_tail_one_stream_in_human_lines(make_store, database_url) -> None:
    store = make_store()
    process = start_tail(database_url, store.schema, "acct-1")
    try:
        assert process.stdout is not None
        store.append_to_stream("acct-2", 0, [EventData("Other", {"n": 1})])
        store.append_to_stream("acct-1", 0, [EventData("Opened", {"n": 2})])
        line = read_line(process.stdout, 30)
        assert "acct-1@1" in line
        assert "Opened" in line
        assert '{"n": 2}' in line
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "Other" not in out


@pytest.mark.parametrize("command", ["status", "tail", "subscriptions"])
def test_failures_are_one_line(command: str, database_url) -> None:
    from .test_cli import closed_port

    url = f"postgresql://admin:s3cr3t-pw@127.0.0.1:{closed_port()}/nowhere"
    line = assert_failed(run(command, "--url", url), "cannot connect to", "***")
    assert "s3cr3t-pw" not in line
    assert_failed(
        run(command, "--url", url_text(database_url), "--schema", "no_such_schema"),
        "eventstore init",
    )

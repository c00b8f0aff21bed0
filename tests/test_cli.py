import json

import pytest

from council.cli import main
from council.core.errors import DefinitionError
from tests.conftest import write_yaml


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_malformed_user_archetype_is_one_line_and_exit_1(council_home, capsys):
    path = write_yaml(council_home, "archetypes", "broken", "title: X\nvoice: v\nperspective: p\nmood: grumpy\n")
    code, out, err = run_cli(capsys, "archetypes", "list")
    assert code == 1
    assert str(path) in err and "mood" in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_debug_flag_shows_the_real_exception(council_home, capsys):
    write_yaml(council_home, "archetypes", "broken", "title: [\n")
    with pytest.raises(DefinitionError):
        main(["--debug", "pools", "list"])


def test_run_with_fake_persona_is_logged_and_listed(council_home, capsys):
    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    code, out, _ = run_cli(capsys, "run", "hello", "--pool", "soldier", "--json")
    assert code == 0
    episode = json.loads(out)
    assert episode["pool"] == "soldier" and episode["status"] == "finished"
    code, out, _ = run_cli(capsys, "logs", "list", "--json")
    assert [e["episode_id"] for e in json.loads(out)] == [episode["episode_id"]]
    code, out, _ = run_cli(capsys, "logs", "show", episode["episode_id"][:6], "--json")
    assert json.loads(out)["prompt"] == "hello"


def test_a_run_without_recall_needs_no_memory(council_home, capsys):
    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    (council_home / "chroma").mkdir(parents=True)
    (council_home / "chroma" / "chroma.sqlite3").write_bytes(b"not a database" * 100)
    code, _, err = run_cli(capsys, "run", "hello", "--pool", "soldier")
    assert code == 1 and "council memory rebuild" in err  # recall needs memory: one line, with the fix
    code, out, _ = run_cli(capsys, "run", "hello", "--pool", "soldier", "--no-recall", "--json")
    assert code == 0 and json.loads(out)["status"] == "finished"
    code, out, _ = run_cli(capsys, "logs", "list", "--json")
    assert len(json.loads(out)) == 1  # logged, to be remembered by the next rebuild


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        (b"not a model at all", "is not a GGUF file"),
        (b"GGUF" + b"\0" * 64, "could not load"),
    ],
)
@pytest.mark.integration  # llama.cpp itself reads the file
def test_missing_or_corrupt_model_file_names_the_file(council_home, tmp_path, capsys, content, expected):
    model = tmp_path / "model.gguf"
    if content is not None:
        model.write_bytes(content)
    write_yaml(council_home, "personas", "default", f"character: test\nmodel: {model}\n")
    code, _, err = run_cli(capsys, "run", "hello")
    assert code == 1
    assert str(model) in err and expected in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_pool_lists_the_known_ones(capsys):
    code, _, err = run_cli(capsys, "pools", "show", "nope")
    assert code == 1 and "default" in err and "soldier" in err


def test_lists_show_builtins(capsys):
    code, out, _ = run_cli(capsys, "pools", "list", "--json")
    assert code == 0
    pools = {p["name"]: p for p in json.loads(out)}
    assert pools["mother"]["rule"] == "veto"
    code, out, _ = run_cli(capsys, "archetypes", "show", "libido", "--json")
    assert "love of life" in json.loads(out)["voice"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(("run", "hi", "--seed", "-1"), "--seed"), (("archetypes", "list"), "weight")],
)
def test_bad_numbers_are_refused_before_any_episode(council_home, capsys, args, fragment):
    write_yaml(council_home, "archetypes", "reason", "title: R\nvoice: v\nperspective: p\nweight: .inf\n")
    code, _, err = run_cli(capsys, *args)
    assert code in (1, 2) and fragment in err and "Traceback" not in err
    from council.core.settings import load_settings
    from council.store.database import Database
    from council.store.episodes import EpisodeLog

    assert EpisodeLog(Database(load_settings().db_url)).list(limit=5) == []  # no failed episode was logged


@pytest.mark.parametrize("as_json", [False, True])
def test_sleep_train_on_a_night_without_episodes_says_there_was_nothing_to_learn(council_home, capsys, as_json):
    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    code, out, err = run_cli(capsys, "sleep", "--train", *(["--json"] if as_json else []))
    assert code == 0, err
    said = json.loads(out)["training"]["skipped"] if as_json else out
    assert "nothing to learn" in said and "has no rows" not in said + err


def a_wakeup(promoted):
    from datetime import datetime, timezone

    from council.core.training import Figures, GateResult, TrainingFigures
    from council.store.versions import PersonaVersion
    from sleep.train_version import TrainedVersion

    figures = lambda name, **alone: Figures(  # noqa: E731
        version=name, heldout_accuracy=0.75, heldout_margin=0.1, kl_from_base=0.02, decisions={"continue": 0.5},
        marker_rate=0.25, **alone,
    )  # fmt: skip
    training = TrainingFigures(
        steps=4, epochs=1, pairs=8, new_pairs=6, replayed_pairs=2, heldout_pairs=4, train_loss=0.69, last_loss=0.6,
        reward_accuracy=0.75, reward_margin=0.2, resumed_from=None, seconds=12.5, device="cpu", settings={},
        run_key="k",
    )  # fmt: skip
    reasons = [] if promoted else ["held-out accuracy fell"]
    candidate = figures("v1", behaviour_requests=3, declines_when_should=0.5, declines_when_should_not=0.1)
    gate = GateResult(
        passed=promoted, reasons=reasons, candidate=candidate, previous=figures("base"), base=figures("base")
    )
    version = PersonaVersion(
        id="v1", persona="default", number=1, created_at=datetime.now(timezone.utc), parent="base", adapter="a",
        dataset_hash="d", base_hash="b", training=training, gate=gate, promoted=promoted,
    )  # fmt: skip
    return TrainedVersion(version=version, gate=gate, report="report/index.html", in_use="v1" if promoted else "base")


@pytest.mark.parametrize("promoted", [True, False])
def test_train_prints_the_run_the_gate_and_the_version_in_use(council_home, capsys, monkeypatch, tmp_path, promoted):
    import sleep.train_version

    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    monkeypatch.setattr(sleep.train_version, "train_version", lambda rt, dataset, progress: a_wakeup(promoted))
    code, out, err = run_cli(capsys, "train", str(tmp_path))
    assert code == 0, err
    assert "trained v1: 4 steps on 8 pairs, 12.5 s on cpu" in out
    assert "alone: declines 0.5 of what it should let go of, 0.1 of look-alikes" in out
    verdict = "promoted" if promoted else "not promoted: held-out accuracy fell"
    assert f"v1 {verdict}; the persona now runs {'v1' if promoted else 'base'}" in out
    code, out, _ = run_cli(capsys, "train", str(tmp_path), "--json")
    data = json.loads(out)
    assert (data["version"], data["promoted"], data["in_use"]) == ("v1", promoted, "v1" if promoted else "base")
    assert data["training"]["steps"] == 4 and data["gate"]["candidate"]["declines_when_should"] == 0.5


def test_an_overflowing_weight_is_refused_in_one_line_naming_the_file(council_home, capsys):
    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    paths = [
        write_yaml(council_home, "archetypes", name, "title: H\nvoice: v\nperspective: p\nweight: 1.0e308\n")
        for name in ("huge", "vast")
    ]
    write_yaml(council_home, "pools", "giants", "archetypes: [huge, vast]\n")
    code, _, err = run_cli(capsys, "run", "hi", "--pool", "giants")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert str(paths[0]) in err and "weight" in err and "1000" in err


def test_logs_list_shows_each_episode_on_one_line_at_80_columns(council_home, capsys):
    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    prompt = "Please explain, in plain words,\nwhy the sky looks blue at noon and red at sunset over the sea"
    ids = [json.loads(run_cli(capsys, "run", prompt, "--pool", "soldier", "--json")[1])["episode_id"] for _ in "ab"]
    code, out, _ = run_cli(capsys, "logs", "list")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3 and all(len(line) <= 80 for line in lines)
    for line, episode_id in zip(lines[1:], reversed(ids), strict=True):
        assert line.startswith(episode_id) and "Please explain" in line and line.endswith("…")


def damage(db, page=None):
    """Overwrite one page of a SQLite file: the root of the episodes table, or the header page (page 1)."""
    import sqlite3

    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = c.execute("PRAGMA page_size").fetchone()[0]
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name = 'episodes'").fetchone()[0]
    c.close()
    data = bytearray(db.read_bytes())
    start = ((page or root) - 1) * size
    data[start : start + 100] = b"\xa5" * 100
    db.write_bytes(bytes(data))


@pytest.mark.parametrize(("page", "says"), [(None, "malformed"), (1, "not a database")])
def test_a_damaged_episode_log_is_one_line_naming_the_file_and_the_recovery(council_home, capsys, page, says):
    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    assert run_cli(capsys, "run", "hello", "--pool", "soldier", "--no-recall", "--json")[0] == 0
    db = council_home / "council.db"
    damage(db, page)
    before = db.read_bytes()
    for args in (("logs", "list"), ("logs", "show", "abc"), ("run", "hi", "--pool", "soldier", "--no-recall")):
        code, _, err = run_cli(capsys, *args)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert str(db) in err and "damaged" in err and says in err and ".recover" in err, err
        assert "nothing is written to it" in err and "disk space" not in err and "Traceback" not in err
    assert db.read_bytes() == before


WORDS = "Is my disk full, or is the file is not a database? The database disk image is malformed, it says."


def test_a_prompt_with_the_words_of_damage_does_not_change_the_advice(council_home, capsys):
    import sqlite3

    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    assert run_cli(capsys, "run", "hello", "--pool", "soldier", "--no-recall", "--json")[0] == 0
    with sqlite3.connect(council_home / "council.db") as c:
        c.execute("CREATE TRIGGER refuse BEFORE INSERT ON episodes BEGIN SELECT RAISE(ABORT, 'refused'); END")
    c.close()
    code, _, err = run_cli(capsys, "run", WORDS, "--pool", "soldier", "--no-recall")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "refused" in err and ".recover" not in err and "damaged" not in err and "disk space" not in err, err
    assert "check database_url" in err and "disk full" not in err  # the prompt is not in the message either
    assert run_cli(capsys, "logs", "list")[0] == 0  # and the store is not refused as damaged


def test_damage_is_read_from_the_driver_s_error_and_sqlite_s_result_code(tmp_path):
    import sqlite3

    from sqlalchemy.exc import DatabaseError, OperationalError

    from council.store.database import damaged, storage_fix

    def wrapped(error, kind=OperationalError):
        return kind("INSERT INTO episodes (prompt) VALUES (?)", (WORDS,), error)

    locked = wrapped(sqlite3.OperationalError("database is locked"))
    assert WORDS in str(locked) and not damaged(locked) and storage_fix(locked).startswith("another process")
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\xa5" * 4096)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        sqlite3.connect(bad).execute("SELECT * FROM sqlite_master")
    assert caught.value.sqlite_errorcode == 26 and damaged(wrapped(caught.value, DatabaseError))
    assert ".recover" in storage_fix(wrapped(caught.value, DatabaseError), bad)
    corrupt = sqlite3.DatabaseError("something unexpected")
    corrupt.sqlite_errorcode = 267  # SQLITE_CORRUPT_VTAB: an extended code of SQLITE_CORRUPT
    busy = sqlite3.OperationalError("database disk image is malformed")
    busy.sqlite_errorcode = 5  # the code says busy, whatever the words
    assert damaged(corrupt) and not damaged(busy)
    assert damaged(sqlite3.DatabaseError("file is not a database"))  # no code: SQLite's words


@pytest.mark.parametrize(
    "args",
    [
        ("run", "hi \ud800 there", "--pool", "soldier"),
        ("ask", "hi \udcff there"),
        ("logs", "show", "ab\ud800"),
        ("memory", "search", "hi \ud800 there"),
    ],
)
def test_an_argument_that_is_not_valid_text_is_one_line(council_home, capsys, args):
    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "not valid" in err and "surrogate" in err and "Traceback" not in err and "TypeError" not in err


def test_a_file_name_need_not_be_utf8_and_a_refused_argument_is_shown_cut_short(council_home, tmp_path, capsys):
    import os

    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    rows = tmp_path / os.fsdecode(b"rows-\xff.jsonl")  # bytes that are not UTF-8 reach Python as a lone surrogate
    rows.write_text('{"id": "a", "prompt": "hi", "should_let_go": "perhaps"}\n')
    report = str(tmp_path / os.fsdecode(b"report-\xfe"))
    for args in ((str(rows), "--pool", "soldier"), (str(rows), "--report", report), (str(rows), f"--report={report}")):
        code, _, err = run_cli(capsys, "eval", "behaviour", *args)
        assert code == 1 and "should_let_go" in err and "not valid" not in err, err  # the rows were read
    long = "Please tell me a story about a dragon who \ud800 learns to fly over the sea."
    code, _, err = run_cli(capsys, "run", long, "--pool", "soldier")
    assert code == 1 and "surrogate" in err and "argument 2 ('Please tell me a story about a dragon wh…')" in err, err
    assert "learns to fly" not in err


KILLED_MID_RUN = """
import os, sys
from archetypes.backends.fake import FakeBackend

def generate(self, chat, **kwargs):  # the persona's first words: the signal arrives mid-episode
    os.kill(os.getpid(), int(sys.argv[1]))
    yield "never"

FakeBackend.generate = generate
from council.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_killed(sig):
    """`council run` in its own process, which gets ``sig`` while the persona writes."""
    import subprocess
    import sys

    args = [sys.executable, "-c", KILLED_MID_RUN, str(int(sig)), "run", "hello", "--pool", "soldier", "--no-recall"]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def logged(capsys):
    code, out, _ = run_cli(capsys, "logs", "list", "--json")
    assert code == 0
    return {e["episode_id"]: e for e in json.loads(out)}


@pytest.mark.parametrize(("sig", "code", "name"), [("SIGTERM", 143, "SIGTERM"), ("SIGINT", 130, "Ctrl-C")])
def test_a_run_stopped_by_a_signal_is_logged_interrupted_and_exits_128_plus_it(council_home, capsys, sig, code, name):
    import signal

    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    result = run_killed(signal.Signals[sig])
    assert result.returncode == code, result.stderr
    [episode] = logged(capsys).values()
    assert episode["status"] == "interrupted" and episode["stop_reason"] == f"interrupted by {name}"
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"interrupted by {name}: episode {episode['episode_id']} is logged as interrupted"
    )


def test_ctrl_c_in_process_is_interrupted_exit_130_and_sigterm_s_handler_is_put_back(council_home, capsys, monkeypatch):
    import signal

    from archetypes.backends.fake import FakeBackend

    def generate(self, chat, **kwargs):
        raise KeyboardInterrupt
        yield ""

    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    monkeypatch.setattr(FakeBackend, "generate", generate)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run_cli(capsys, "run", "hello", "--pool", "soldier", "--no-recall")
    assert code == 130 and "interrupted by Ctrl-C" in err and len(err.strip().splitlines()) == 1
    assert signal.getsignal(signal.SIGTERM) is before
    [episode] = logged(capsys).values()
    assert (episode["status"], episode["stop_reason"]) == ("interrupted", "interrupted by Ctrl-C")


def test_ctrl_c_in_any_command_exits_130(council_home, capsys, monkeypatch):
    import council.cli.episodes

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(council.cli.episodes, "episode_log", interrupted)
    code, _, err = run_cli(capsys, "logs", "list")
    assert code == 130 and "interrupted" in err


def test_a_run_killed_outright_is_marked_interrupted_when_the_next_run_starts(council_home, capsys):
    import signal

    from council.store.tasks import this_process

    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    result = run_killed(signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL
    [(killed, episode)] = logged(capsys).items()
    assert episode["status"] == "running" and episode["owner"].startswith(this_process().partition(":")[0] + ":")
    assert run_cli(capsys, "run", "again", "--pool", "soldier", "--no-recall")[0] == 0
    episodes = logged(capsys)
    assert episodes[killed]["status"] == "interrupted" and episode["owner"] in episodes[killed]["stop_reason"]
    assert [e["status"] for eid, e in episodes.items() if eid != killed] == ["finished"]


def test_sigterm_while_ask_waits_exits_143_and_leaves_the_task_queued(council_home, capsys, monkeypatch):
    import os
    import signal
    import time

    def sleep(seconds):
        os.kill(os.getpid(), signal.SIGTERM)

    def unhandled(signum, frame):
        raise AssertionError("ask left SIGTERM to the handler around it")

    monkeypatch.setattr(time, "sleep", sleep)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        code, _, err = run_cli(capsys, "ask", "hello", "--wait")
        assert signal.getsignal(signal.SIGTERM) is unhandled
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143 and err.startswith("interrupted by SIGTERM: the daemon still answers task ")
    from council.core.settings import load_settings
    from council.store.database import Database
    from council.store.tasks import TaskQueue

    assert TaskQueue(Database(load_settings().db_url)).counts()["queued"] == 1


def test_the_default_example_files_are_found_from_any_directory(monkeypatch, tmp_path):
    """`eval recall` and `experiment run` default to files of the checkout's examples/, not of the working directory."""
    import typer

    from council.cli import app

    monkeypatch.chdir(tmp_path)
    root = typer.main.get_command(app)
    with typer.Context(root) as ctx:
        recall = root.commands["eval"].commands["recall"].params[0]
        prompts = next(p for p in root.commands["experiment"].commands["run"].params if p.name == "prompts")
        for param, name in ((recall, "recall_paraphrases.jsonl"), (prompts, "prompts.jsonl")):
            default = param.get_default(ctx)
            assert default.is_absolute() and default.is_file() and default.parts[-2:] == ("examples", name)

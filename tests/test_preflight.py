"""A run checks what it needs before anything trains: every problem is one line, all are printed
together, the command exits 2 and the store is never created (issue: operations)."""

from __future__ import annotations

from click.testing import CliRunner

from privbench.cli import main


def run(tmp_path, *args: str):
    env = {"PRIVBENCH_HOME": str(tmp_path / "home")}
    return CliRunner().invoke(main, ["matrix", "--quiet", "--device", "cpu", *args], env=env)


def test_a_missing_torchvision_dataset_fails_once_before_training(tmp_path):
    db = tmp_path / "store.db"
    result = run(tmp_path, "--dataset", "mnist", "--data-dir", str(tmp_path / "data"),
                 "--defense", "identity", "--defense", "noise", "--attack", "examiner",
                 "--attack", "rmle", "--db", str(db))
    assert result.exit_code == 2, result.output
    folder = tmp_path / "data" / "MNIST"
    assert result.stderr.splitlines() == [
        f"Error: dataset 'mnist' not found under {folder}; run with --download to fetch it (needs "
        "internet) or place the four uncompressed idx files (train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-...) in its raw/ folder (--data-dir sets the folder)"]
    assert not db.exists()


def test_an_unwritable_cache_fails_once_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    db = tmp_path / "store.db"
    result = run(tmp_path, "--defense", "identity", "--attack", "examiner",
                 "--cache-dir", str(blocker / "cache"), "--db", str(db))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == (
        f"Error: --cache-dir {blocker / 'cache'} is not writable (Not a directory); choose a folder "
        "you can write to")
    assert not db.exists()


def test_every_problem_is_listed_together(tmp_path):
    db = tmp_path / "missing-folder" / "store.db"
    result = run(tmp_path, "--dataset", "digits", "--defense", "disguised-nets:block=9",
                 "--attack", "examiner", "--db", str(db))
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines == [
        f"Error: --db {db}: its folder {db.parent} does not exist; create it or choose another path",
        "Error: defense 'disguised-nets': block=9 is larger than the images (8 x 8); accepted: 1 to 8 "
        "(dataset digits)",
        "2 problems found before the run started; nothing was trained or stored"]
    assert not db.parent.exists()


def test_a_missing_probe_dataset_names_the_attack_that_needs_it(tmp_path):
    result = run(tmp_path, "--dataset", "mnist:target=digit", "--data-dir", str(tmp_path / "data"),
                 "--defense", "identity", "--attack", "class-membership", "--db", str(tmp_path / "s.db"))
    assert result.exit_code == 2, result.output
    probe = [line for line in result.stderr.splitlines() if "'fashion-mnist' not found" in line]
    assert len(probe) == 1 and probe[0].endswith(
        "(needed by attack 'class-membership' as its out-of-training probe classes; out=held-out "
        "needs no other dataset)")
    held_out = run(tmp_path, "--dataset", "mnist:target=digit", "--data-dir", str(tmp_path / "data"),
                   "--defense", "identity", "--attack", "class-membership:out=held-out",
                   "--db", str(tmp_path / "s.db"))
    assert "fashion-mnist" not in held_out.stderr

"""The command line: list, matrix, results, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from privbench.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_list_shows_builtins_with_access_package_and_version():
    result = invoke("list", "attacks", "--format", "json")
    assert result.exit_code == 0
    attacks = {a["name"]: a for a in json.loads(result.stdout)["attacks"]}
    assert attacks["inverse-network"]["threat_model"] == "black-box"
    assert attacks["inverse-network"]["requires"] == ["query"]
    assert attacks["inverse-network"]["package"] == "privbench"
    assert "privacy_mapping" in attacks["attribute-inference"]
    table = invoke("list")
    assert table.exit_code == 0
    for name in ("digits", "identity", "noise", "inverse-network", "attribute-inference"):
        assert name in table.stdout


@pytest.mark.parametrize("args, message", [
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; accepted: "),
    (["--defense", "rot13"], "unknown defense 'rot13'; accepted: "),
    (["--attack", "psychic"], "unknown attack 'psychic'; accepted: "),
    (["--defense", "noise:scale=loud"], "defense 'noise': bad value 'loud' for parameter 'scale'; accepted: "),
    (["--defense", "noise:volume=3"], "defense 'noise': unknown parameter 'volume'; accepted: distribution, scale"),
    (["--seeds", "a,b"], "bad seeds 'a,b'; accepted: integers"),
    (["-c", "/no/such/file.toml"], "cannot read config /no/such/file.toml"),
    (["--device", "tpu"], "unknown device 'tpu'; accepted: "),
])
def test_bad_input_is_one_line_with_exit_code_2(args, message, tmp_path):
    result = invoke("matrix", "--db", str(tmp_path / "x.db"), "--quiet", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: " + message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_malformed_toml_config_is_one_line(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("defenses = [\n")
    result = invoke("matrix", "-c", str(config), "--db", str(tmp_path / "x.db"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: config {config} is not valid TOML")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_config_key_is_one_line(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("seed = 3\n")
    result = invoke("matrix", "-c", str(config), "--db", str(tmp_path / "x.db"))
    assert result.exit_code == 2
    assert "unknown key 'seed'; accepted:" in result.stderr


def test_matrix_from_a_toml_sweep_then_results_as_json_and_csv(tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text("""
seeds = [0]
datasets = ["digits:target_epochs=2"]
[[defense]]
name = "noise"
scale = [0.1, 1.0]
[[attack]]
name = "attribute-inference"
epochs = 2
""")
    db = str(tmp_path / "m.db")
    result = invoke("matrix", "-c", str(config), "--db", db, "--quiet")
    assert result.exit_code == 0, result.output
    assert "results: mean ± std over seeds" in result.stdout
    assert "noise:scale=1.0" in result.stdout
    rows = json.loads(invoke("results", "--db", db, "--format", "json").stdout)
    assert {row["defense"] for row in rows} == {"noise:scale=0.1", "noise:scale=1.0"}
    for row in rows:
        assert row["threat_model"] == "black-box" and row["seeds"] == [0]
        assert set(row["metrics"]["attack.accuracy"]) == {"mean", "std", "n"}
    cells = json.loads(invoke("results", "--db", db, "--format", "json", "--cells").stdout)
    assert len(cells) == 2 and "utility.accuracy" in cells[0]["metrics"]
    csv = invoke("results", "--db", db, "--format", "csv").stdout.splitlines()
    assert csv[0] == "dataset,defense,attack,threat_model,status,seeds,metric,mean,std,n"
    assert any(",attack.accuracy," in line for line in csv[1:])
    rerun = invoke("matrix", "-c", str(config), "--db", db, "--quiet")
    assert "2 cells: 2 already finished, 0 run" in rerun.stdout
    # the run ends by saying how to see its leaderboard, with this store and the page it writes
    assert f"leaderboard: privbench leaderboard --db {db} -o site" in " ".join(rerun.stdout.split())
    assert "site/index.html" in rerun.stdout


def test_a_failed_cell_makes_the_run_exit_1_with_one_line_per_failure(tmp_path, monkeypatch):
    from privbench_plugins.examiner import Examiner

    def crash(self, view):
        raise RuntimeError("the examiner crashed\nsecond line of the message")

    monkeypatch.setattr(Examiner, "run", crash)
    result = invoke("matrix", "--dataset", "digits:limit=200,target_epochs=1", "--defense",
                    "identity", "--attack", "examiner:epochs=1", "--db", str(tmp_path / "f.db"),
                    "--quiet", "--trust-plugins")  # the patched run() is this process's
    assert result.exit_code == 1
    failures = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert failures == ["failed: digits:limit=200,target_epochs=1 · identity · examiner:epochs=1 · "
                        "seed 0: RuntimeError: the examiner crashed"]


def test_list_without_a_terminal_prints_one_readable_block_per_plugin():
    result = invoke("list", "defenses")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "defenses"
    heads = [line for line in lines if line.startswith("  ") and not line.startswith("    ")]
    assert any(line.startswith("  disguised-nets (privbench ") for line in heads), heads
    assert all(len(line) <= 120 for line in lines)
    block = lines[lines.index(next(h for h in heads if h.startswith("  disguised-nets"))) + 1]
    assert block.startswith("    summary: block-wise secret permutation")


def test_list_never_breaks_a_threat_model_name_at_its_hyphen():
    from click.testing import CliRunner

    from privbench.cli import main
    result = CliRunner().invoke(main, ["list"], terminal_width=50)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert not any(line.rstrip().endswith(("query-", "white-", "black-")) for line in lines), result.output
    assert "query-free" in result.output


def test_per_cell_results_show_the_seed_and_no_std_for_one_value(tmp_path):
    import csv
    import io
    import json

    from click.testing import CliRunner
    from test_leaderboard import _scored, _store

    from privbench.cli import main
    _store(tmp_path, [*_scored("identity", "inv", (0.1, 0.3)), *_scored("noise", "inv", (0.5,))])
    db = str(tmp_path / "s.db")
    table = CliRunner().invoke(main, ["results", "--db", db, "--cells"], terminal_width=200)
    assert table.exit_code == 0 and "seed" in table.output.splitlines()[2]
    summary = json.loads(CliRunner().invoke(main, ["results", "--db", db, "--format", "json"]).output)
    stds = {row["defense"]: row["metrics"]["privacy.score"]["std"] for row in summary}
    assert stds["identity"] > 0 and stds["noise"] is None
    rows = list(csv.DictReader(io.StringIO(CliRunner().invoke(main, ["results", "--db", db, "--format",
                                                                     "csv"]).output)))
    assert [r["std"] for r in rows if r["defense"] == "noise" and r["metric"] == "privacy.score"] == [""]

"""``privbench reproduce``: shipped configs validate; rows hold or fail on what was measured.

The row logic is tested on planned cells with hand-made stored outcomes (no training); one small
digits config runs end to end through the command line with --quick, once with expectations that
hold (exit 0) and once with a claim the data contradicts (exit 1).
"""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from privbench.cli import main
from privbench.errors import PrivbenchError
from privbench.metrics import METRICS
from privbench.reproduce import Selection, evaluate, find, load, plan_cells, shipped, validate

SHIPPED = sorted(shipped())
# What the shipped configs use that other work adds: a config is skipped, with the reason, until
# its names are registered.
NEEDS = {"attack.ssim_skimage": ("metric", None), "he-cifar": ("dataset", "arch"),
         "lfw-people": ("dataset", None)}


# The papers' services classify the 10 digits / classes; these datasets default to coarser tasks.
PAPER_TASKS = {"mnist": "digit", "cifar10": "class", "digits": "digit"}
# Cloak's and Shredder's "digit > 5"
PAPER_TASKS_BY_CONFIG = {"cloak-mnist": {"mnist": "above5"}, "shredder-mnist": {"mnist": "above5"}}


def invoke(*args):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "250"})  # a table row on one line


def write(tmp_path, text: str, name: str = "repro.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def unregistered_needs(registry, config_text: str) -> list[str]:
    missing = []
    for name, (kind, param) in NEEDS.items():
        if name not in config_text:
            continue
        if kind == "metric":
            present = name in METRICS
        elif param:
            info = {p.name: p for p in registry.get("dataset", "digits").cls.parameters()}[param]
            present = name in (info.choices or ())
        else:
            present = name in registry.names(kind)
        if not present:
            missing.append(name)
    return missing


# -- the shipped configs ---------------------------------------------------------------------------

def test_the_papers_experiments_are_shipped():
    assert SHIPPED == sorted(["he2019-mnist", "he2019-cifar10", "he2019-defenses", "disguised-nets-mnist",
                              "disguised-nets-cifar10-lfw", "disguised-nets-sweeps", "dapter-lambda",
                              "privacy-finetune-celeba", "cloak-mnist", "nopeek-mnist", "shredder-mnist",
                              "reconstruction-attacks-mnist"])


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_validates_against_the_registry(name, registry):
    missing = unregistered_needs(registry, find(name).read_text())
    if missing:
        pytest.skip(f"{name} uses {', '.join(missing)}, not registered yet (other work of issue 14)")
    repro = load(name)
    assert repro.cost and repro.quick_cost and repro.paper
    for row in repro.rows:
        assert row.source.strip(), row.where
        assert row.check in ("tolerance", "bounds", "order", "monotone", "compare", "spread", "some")
        assert row.metric in METRICS, row.where
    validate(repro, registry)  # every spec, [quick] key and row setting, full and quick plans
    quick_cells = plan_cells(repro, registry, Selection(quick=True))
    full_cells = plan_cells(repro, registry)
    assert len(quick_cells) == len(full_cells)
    assert {c.key for c in quick_cells}.isdisjoint({c.key for c in full_cells})  # quick differs
    if any(row.check != "tolerance" for row in repro.rows):
        assert any(row.in_quick and row.check != "tolerance" for row in repro.rows), \
            "--quick would check nothing"
    for cell in full_cells:  # the service classifies what the paper's does, not a default task
        expected = {**PAPER_TASKS, **PAPER_TASKS_BY_CONFIG.get(name, {})}.get(cell.dataset.name)
        assert expected is None or cell.dataset.params["target"] == expected, cell.dataset.spec


def test_list_names_every_shipped_config_with_its_cost():
    result = invoke("reproduce", "--list", "--format", "json")
    assert result.exit_code == 0, result.output
    listed = {row["name"]: row for row in json.loads(result.stdout)}
    assert sorted(listed) == SHIPPED
    assert "GPU" in listed["he2019-cifar10"]["cost"]
    assert all(row["cost"] and row["paper"] for row in listed.values())


def test_unknown_name_is_one_line_listing_the_accepted_names():
    result = invoke("reproduce", "he2020-mnist")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "unknown reproduction 'he2020-mnist'; accepted: " in result.output
    assert "he2019-mnist" in result.output and "dapter-lambda" in result.output


# -- loading rejects rows that cannot be checked --------------------------------------------------------

HEADER = """\
    name = "toy"
    paper = "a paper"
    cost = "seconds"

    [[matrix]]
    datasets = ["digits"]
    defenses = ["identity", "noise:scale=2.0"]
    attacks = ["inverse-network", "attribute-inference"]

    """


@pytest.mark.parametrize("row, message", [
    ('setting = { defense = "identity" }\nmetric = "attack.ssim"\nbelow = 0.5\n', "no source"),
    ('setting = { defense = "identity" }\nmetric = "attack.ssim"\nsource = "T1"\n',
     "needs exactly one check, a tolerance or a shape fact (found: none)"),
    ('setting = { defense = "identity" }\nmetric = "attack.ssim"\nsource = "T1"\nbelow = 1\n'
     'tolerance = 0.1\nvalue = 0.5\n', "needs exactly one check"),
    ('setting = { defense = "identity" }\nmetric = "attack.ssim"\nsource = "T1"\ntolerance = 0.1\n',
     "a tolerance needs a single published 'value'"),
    ('setting = { defense = "identity" }\nmetric = "attack.ssim"\nsource = "T1"\norder = "decreasing"\n',
     "'order' needs 'across'"),
    ('setting = { defense = "identity" }\nmetric = "attack.ssim"\nsource = "T1"\nmonotone = "down"\n'
     'over = "defense.scale"\n', "bad direction 'down'; accepted: decreasing, increasing"),
    ('setting = { defence = "identity" }\nmetric = "attack.ssim"\nsource = "T1"\nbelow = 1\n',
     "unknown setting part 'defence'; accepted: dataset, defense, attack"),
    ('setting = { defense = "identity" }\nmetric = "attack.ssim"\nsource = "T1"\nbelow = 1\nsauce = 2\n',
     "unknown key 'sauce'"),
])
def test_a_row_without_source_or_with_no_single_check_is_a_one_line_error(tmp_path, row, message):
    path = write(tmp_path, HEADER + "[[published]]\n" + row)
    with pytest.raises(PrivbenchError, match="published row 1") as error:
        load(path)
    assert message in str(error.value)
    result = invoke("reproduce", path, "--db", str(tmp_path / "x.db"))
    assert result.exit_code == 2 and result.output.count("\n") == 1


@pytest.mark.parametrize("row, message", [
    ('setting = { defense = "identity" }\nmetric = "attack.psnr_db"\nsource = "T1"\nbelow = 1\n',
     "metric 'attack.psnr_db' is not registered"),
    ('setting = { defense = "identity" }\nmetric = "attack.ssim"\nsource = "T1"\nbelow = 1\n',
     "matches 2 results of the matrix, not one"),  # two attacks report on identity
    ('setting = { defense = "noise:scale=0.7", attack = "inverse-network" }\nmetric = "attack.ssim"\n'
     'source = "T1"\nbelow = 1\n', "matches 0 results"),
    ('setting = { defense = "noise:loudness=2", attack = "inverse-network" }\nmetric = "attack.ssim"\n'
     'source = "T1"\nbelow = 1\n', "unknown parameter 'loudness'"),
    ('setting = { attack = "inverse-network" }\nmetric = "attack.ssim"\nsource = "T1"\n'
     'monotone = "decreasing"\nover = "defense.scale"\n', "has no parameter 'scale'"),
])
def test_validation_names_the_row_and_what_it_cannot_match(tmp_path, registry, row, message):
    repro = load(write(tmp_path, HEADER + "[[published]]\n" + row))
    with pytest.raises(PrivbenchError, match="published row 1") as error:
        validate(repro, registry)
    assert message in str(error.value)


def test_a_setting_naming_a_default_value_matches_the_cell_that_leaves_it_at_its_default(tmp_path, registry):
    """A matrix spec drops parameters at their defaults ("noise", not "noise:scale=0.3"); a row that
    names the default explicitly still finds that cell, and only that one."""
    header = HEADER.replace('defenses = ["identity", "noise:scale=2.0"]', 'defenses = ["noise", "noise:scale=2.0"]')
    row = ('setting = { defense = "noise:scale=0.3", attack = "inverse-network" }\nmetric = "attack.ssim"\n'
           'source = "T1"\nbelow = 1\n')
    validate(load(write(tmp_path, header + "[[published]]\n" + row)), registry)


def test_a_utility_row_needs_no_attack_but_an_attack_row_does(tmp_path, registry):
    rows = """\
        [[published]]
        setting = { defense = "identity" }
        metric = "utility.accuracy"
        source = "T2"
        above = 0.5
        """
    validate(load(write(tmp_path, HEADER + textwrap.dedent(rows))), registry)


def test_a_quick_key_no_plugin_declares_is_an_error(tmp_path, registry):
    text = HEADER + "[quick.attack]\nepochz = 3\n\n[[published]]\nsetting = { defense = \"identity\" }\n" \
        "metric = \"utility.accuracy\"\nsource = \"T2\"\nabove = 0.5\n"
    with pytest.raises(PrivbenchError, match="key 'epochz' is no parameter of attribute-inference, "
                                             "inverse-network; accepted: "):
        validate(load(write(tmp_path, text)), registry)


# -- checking rows against stored outcomes (no training) ---------------------------------------------------

SWEEP = """\
    name = "toy-sweep"
    paper = "a paper"
    cost = "seconds"

    [[matrix]]
    datasets = ["digits"]
    defenses = ["identity"]
    attacks = ["inverse-network", "attribute-inference"]

    [[matrix.defense]]
    name = "noise"
    scale = [0.1, 0.5, 2.0]

    """


def outcomes_for(cells, ssim_by_defense: dict[str, float], accuracy_by_defense: dict[str, float]):
    """Stored outcomes as the store returns them: done cells with their metrics, keyed by cell."""
    stored = {}
    for cell in cells:
        metrics = {"utility.accuracy": accuracy_by_defense[cell.defense.spec]}
        if cell.attack.name == "inverse-network":
            metrics["attack.ssim"] = ssim_by_defense[cell.defense.spec] + 0.01 * cell.seed
        stored[cell.key] = SimpleNamespace(status="done", reason=None, metrics=[
            SimpleNamespace(name=k, value=v) for k, v in metrics.items()])
    return stored


def checked(tmp_path, registry, rows: str, ssim: dict, accuracy: dict, seeds=(0,)):
    repro = load(write(tmp_path, SWEEP + textwrap.dedent(rows)))
    validate(repro, registry)
    selection = Selection(seeds=seeds)
    cells = plan_cells(repro, registry, selection)
    return evaluate(repro, registry, outcomes_for(cells, ssim, accuracy), selection)


SSIM = {"identity": 0.95, "noise:scale=0.1": 0.80, "noise:scale=0.5": 0.45, "noise:scale=2.0": 0.10}
ACCURACY = {"identity": 0.97, "noise:scale=0.1": 0.96, "noise:scale=0.5": 0.90, "noise:scale=2.0": 0.55}
TREND_ROWS = """\
    [[published]]
    setting = { defense = "noise", attack = "inverse-network" }
    metric = "attack.ssim"
    monotone = "decreasing"
    over = "defense.scale"
    source = "F1"

    [[published]]
    setting = { attack = "inverse-network" }
    metric = "attack.ssim"
    order = "decreasing"
    across = [{ defense = "identity" }, { defense = "noise:scale=0.5" }, { defense = "noise:scale=2.0" }]
    source = "F1"

    [[published]]
    setting = { defense = "noise:scale=2.0", attack = "inverse-network" }
    metric = "attack.ssim"
    less_than = { defense = "identity" }
    margin = 0.5
    source = "F1"

    [[published]]
    setting = { defense = "noise" }
    metric = "utility.accuracy"
    spread = 0.1
    over = "defense.scale"
    source = "F2"

    [[published]]
    setting = { defense = "identity" }
    metric = "utility.accuracy"
    value = 0.96
    tolerance = 0.02
    source = "T1"
    """


def test_trends_comparisons_and_tolerances_hold_on_data_that_has_them(tmp_path, registry):
    results = checked(tmp_path, registry, TREND_ROWS, SSIM, ACCURACY)
    assert [r.holds for r in results] == [True, True, True, False, True]
    sweep = results[0]
    assert [p.label for p in sweep.points] == ["scale=0.1", "scale=0.5", "scale=2.0"]
    assert [p.mean for p in sweep.points] == pytest.approx([0.80, 0.45, 0.10])
    assert "max - min = 0.41" in results[3].why  # accuracy 0.96 -> 0.55 is no flat curve


def test_a_trend_the_data_breaks_fails_and_slack_forgives_a_small_step(tmp_path, registry):
    bumpy = {**SSIM, "noise:scale=0.5": 0.82}  # up by 0.02 from scale 0.1
    strict, *_ = checked(tmp_path, registry, TREND_ROWS, bumpy, ACCURACY)
    assert strict.holds is False and "0.8 -> 0.82 breaks the decreasing trend" in strict.why
    forgiving = TREND_ROWS.replace('over = "defense.scale"\n    source = "F1"',
                                   'over = "defense.scale"\n    slack = 0.05\n    source = "F1"', 1)
    assert checked(tmp_path, registry, forgiving, bumpy, ACCURACY)[0].holds is True


def test_a_comparison_needs_its_margin(tmp_path, registry):
    close = {**SSIM, "noise:scale=2.0": 0.60}  # below identity's 0.95, but not by 0.5
    assert checked(tmp_path, registry, TREND_ROWS, close, ACCURACY)[2].holds is False


def test_means_and_std_are_over_seeds_and_utility_is_one_value_per_fit(tmp_path, registry):
    results = checked(tmp_path, registry, TREND_ROWS, SSIM, ACCURACY, seeds=(0, 1, 2))
    identity = results[1].points[0]
    assert identity.n == 3 and identity.mean == pytest.approx(0.96)  # 0.95, 0.96, 0.97
    assert identity.std == pytest.approx(0.01)
    accuracy = results[4].points[0]  # identity's fit, read once per seed though two attacks ran
    assert accuracy.values == pytest.approx([0.97, 0.97, 0.97])


def test_quick_checks_only_shape_facts(tmp_path, registry):
    rows = TREND_ROWS + """
    [[published]]
    setting = { defense = "identity" }
    metric = "utility.accuracy"
    above = 0.99
    source = "T1"
    quick = false
    """
    repro = load(write(tmp_path, SWEEP + textwrap.dedent(rows)))
    selection = Selection(quick=True)
    cells = plan_cells(repro, registry, selection)
    results = evaluate(repro, registry, outcomes_for(cells, SSIM, ACCURACY), selection)
    assert [r.holds for r in results] == [True, True, True, False, None, None]
    assert "not checked with --quick" in results[4].why


def test_a_failed_cell_fails_its_row_with_the_reason(tmp_path, registry):
    repro = load(write(tmp_path, SWEEP + textwrap.dedent(TREND_ROWS)))
    cells = plan_cells(repro, registry)
    stored = outcomes_for(cells, SSIM, ACCURACY)
    for cell in cells:
        if cell.defense.spec == "identity":
            stored[cell.key] = SimpleNamespace(status="failed", reason="CUDA out of memory", metrics=[])
    results = evaluate(repro, registry, stored)
    assert results[1].holds is False
    assert "failed: CUDA out of memory" in results[1].why


def test_dataset_filter_leaves_other_datasets_rows_unchecked(tmp_path, registry):
    text = SWEEP.replace('datasets = ["digits"]', 'datasets = ["digits", "bars"]') + textwrap.dedent("""\
        [[published]]
        setting = { dataset = "bars", defense = "identity" }
        metric = "utility.accuracy"
        above = 0.5
        source = "T1"

        [[published]]
        setting = { dataset = "digits", defense = "identity" }
        metric = "utility.accuracy"
        above = 0.5
        source = "T1"
        """)
    repro = load(write(tmp_path, text))
    selection = Selection(datasets=("digits",))
    run_cells = plan_cells(repro, registry, selection)
    assert {cell.dataset.name for cell in run_cells} == {"digits"}
    results = evaluate(repro, registry, outcomes_for(run_cells, SSIM, ACCURACY), selection)
    assert results[0].holds is None and "not run: bars is not in --dataset" in results[0].why
    assert results[1].holds is True
    with pytest.raises(PrivbenchError, match="has no dataset 'mnist'; accepted: bars, digits"):
        plan_cells(repro, registry, Selection(datasets=("mnist",)))


def test_quick_overrides_one_dataset_and_survive_a_filter_that_leaves_it_out(tmp_path, registry):
    text = SWEEP.replace('datasets = ["digits"]', 'datasets = ["digits", "bars"]') + textwrap.dedent("""\
        [[published]]
        setting = { dataset = "bars", defense = "identity" }
        metric = "utility.accuracy"
        above = 0.5
        source = "T1"

        [quick.dataset]
        target_epochs = 2

        [quick.dataset.bars]
        limit = 100
        """)
    repro = load(write(tmp_path, text))
    quick = plan_cells(repro, registry, Selection(quick=True))
    limits = {(c.dataset.name, c.dataset.params["limit"], c.dataset.params["target_epochs"]) for c in quick}
    assert limits == {("digits", 0, 2), ("bars", 100, 2)}
    only_digits = plan_cells(repro, registry, Selection(quick=True, datasets=("digits",)))
    assert {c.dataset.name for c in only_digits} == {"digits"}


# -- end to end: a digits config through the command line ------------------------------------------------

TOY = """\
    name = "toy-digits"
    paper = "test-only: identity vs strong input noise on digits"
    cost = "seconds"

    [[matrix]]
    datasets = ["digits"]
    defenses = ["identity", "noise:scale=2.0"]
    attacks = ["inverse-network:epochs=30"]

    [quick.dataset]
    limit = 600
    target_epochs = 8

    [quick.attack]
    epochs = 3

    [[published]]
    setting = { defense = "noise:scale=2.0" }
    metric = "attack.ssim"
    less_than = { defense = "identity" }
    source = "He et al. 2019, Sec. 7.4 (noise on the input hides it)"

    [[published]]
    setting = { attack = "inverse-network" }
    metric = "utility.accuracy"
    order = "decreasing"
    across = [{ defense = "identity" }, { defense = "noise:scale=2.0" }]
    source = "He et al. 2019, Sec. 7.4 (more noise costs accuracy)"

    [[published]]
    setting = { defense = "identity" }
    metric = "utility.accuracy"
    value = 0.97
    tolerance = 0.03
    source = "a made-up table, never checked under --quick"
    """

LEAKY_CLAIM = """
    [[published]]
    setting = { defense = "identity" }
    metric = "attack.ssim"
    less_than = { defense = "noise:scale=2.0" }
    source = "a wrong claim: the unprotected images leak less than the noisy ones"
    """


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    """The toy config with --quick, then again with a claim the data contradicts (same store). Its
    target model trains 8 epochs: with 3, the identity's accuracy ranged 0.51-0.87 over eight fresh
    stores (each its own run secret) and once fell to a constant guess (0.425, the same as the
    noisy server's), which failed the "decreasing" row; with 8 it ranged 0.89-0.94 against the
    noisy server's 0.48-0.60."""
    folder = tmp_path_factory.mktemp("reproduce")
    db = str(folder / "privbench.db")
    holding = write(folder, TOY, "toy.toml")
    broken = write(folder, TOY + LEAKY_CLAIM, "toy-broken.toml")
    first = invoke("reproduce", holding, "--quick", "--db", db, "--quiet")
    table = invoke("reproduce", broken, "--quick", "--db", db, "--quiet")
    as_json = invoke("reproduce", broken, "--quick", "--db", db, "--quiet", "--format", "json")
    return first, table, as_json


def test_quick_run_prints_the_rows_side_by_side_and_exits_0_when_they_hold(toy_runs):
    first, _, _ = toy_runs
    assert first.exit_code == 0, first.output
    for text in ("toy-digits: published vs measured", "attack.ssim", "utility.accuracy", "< identity",
                 "decreasing", "± 0.03", "He et al. 2019, Sec. 7.4", "2 of 2 checked rows hold",
                 "2 cells run, 0 already finished"):
        assert text in first.output, text


def test_a_claim_the_measurements_contradict_fails_the_row_and_exits_1(toy_runs):
    _, table, as_json = toy_runs
    assert table.exit_code == 1, table.output
    assert "NO" in table.output
    assert "does not hold: published row 4 (attack.ssim at identity)" in table.output
    assert "0 cells run, 2 already finished" in table.output  # resumed from the store
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["holds"] is False
    assert [row["holds"] for row in report["rows"]] == [True, True, None, False]
    noisy, identity = report["rows"][0]["measured"][0], report["rows"][0]["compared_with"]
    assert noisy["n"] == 1 and noisy["mean"] < identity["mean"]


def test_missing_data_stops_the_run_before_anything_trains(tmp_path):
    db = tmp_path / "x.db"
    result = invoke("reproduce", "dapter-lambda", "--quick", "--data-dir", str(tmp_path), "--db", str(db))
    assert result.exit_code == 2
    assert "dataset 'cifar10' not found" in result.output
    assert "nothing was trained or stored; --dataset NAME runs the part on one dataset" in result.output
    assert not db.exists()

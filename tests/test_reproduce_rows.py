"""``[[published]]`` keys beyond the single check: ``reference`` / ``reference_source`` (the authors'
own code's number, shown and never checked), ``aggregate`` and ``min_seeds`` (how the seeds of a
point are read), and the ``some_below`` / ``some_above`` check with its optional ``where``.

Loading rejects each malformed key with a one-line error naming the row; the checks run on planned
cells with hand-made stored outcomes (no training), per seed, so every expected verdict and text
below follows from the numbers written here.
"""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from privbench.cli import main
from privbench.errors import PrivbenchError
from privbench.reproduce import Selection, as_dicts, evaluate, load, measured_text, plan_cells, validate
from privbench.reproduce.checks import check_text

SWEEP = """\
    name = "toy-rows"
    paper = "test-only"
    cost = "seconds"

    [[matrix]]
    datasets = ["digits"]
    defenses = ["identity"]
    attacks = ["inverse-network", "attribute-inference"]

    [[matrix.defense]]
    name = "noise"
    scale = [0.1, 0.5, 2.0]

    """

SWEEP_ROW = """\
    [[published]]
    setting = { defense = "noise", attack = "inverse-network" }
    metric = "attack.ssim"
    over = "defense.scale"
    source = "F1"
    """


def write(tmp_path, text: str) -> str:
    path = tmp_path / "repro.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def load_error(tmp_path, row: str) -> str:
    """The one-line error loading SWEEP with this row raises (also through the command line)."""
    path = write(tmp_path, SWEEP + "[[published]]\n" + row)
    with pytest.raises(PrivbenchError, match="published row 1") as error:
        load(path)
    result = CliRunner().invoke(main, ["reproduce", path, "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    return str(error.value)


ROW = 'setting = { defense = "identity", attack = "inverse-network" }\nmetric = "attack.ssim"\nsource = "T1"\n'
SOME = 'setting = { defense = "noise", attack = "inverse-network" }\nmetric = "attack.ssim"\nsource = "T1"\n'


# -- loading ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("row, message", [
    (ROW + "below = 1\nreference = 0.3\n",
     "'reference' needs a 'reference_source' (where the authors' code's number comes from)"),
    (ROW + "below = 1\nreference = 0.3\nreference_source = \"  \"\n", "'reference' needs a 'reference_source'"),
    (ROW + "below = 1\nreference_source = \"their repo\"\n", "'reference_source' without a 'reference' number"),
    (ROW + "below = 1\nreference = \"0.3\"\nreference_source = \"their repo\"\n",
     "'reference' must be a number; got '0.3'"),
    (ROW + "below = 1\naggregate = \"mode\"\n", "bad aggregate 'mode'; accepted: mean, median"),
    (ROW + "below = 1\naggregate = 2\n", "bad aggregate 2; accepted: mean, median"),
    (ROW + "below = 1\nmin_seeds = 0\n", "'min_seeds' must be an integer >= 1; got 0"),
    (ROW + "below = 1\nmin_seeds = 2.5\n", "'min_seeds' must be an integer >= 1; got 2.5"),
    (ROW + "below = 1\nmin_seeds = true\n", "'min_seeds' must be an integer >= 1; got True"),
    (SOME + "some_below = 0.25\n", "'some_below' / 'some_above' need 'across' or 'over', the points to search"),
    (SOME + "some_below = 0.25\nbelow = 0.5\nover = \"defense.scale\"\n",
     "needs exactly one check, a tolerance or a shape fact (found: bounds, some)"),
    (SOME + "some_above = \"high\"\nover = \"defense.scale\"\n", "'some_above' must be a number; got 'high'"),
    (ROW + "below = 1\nwhere = { metric = \"utility.accuracy\", above = 0.9 }\n",
     "'where' goes only with some_below / some_above"),
    (SOME + "some_below = 0.25\nover = \"defense.scale\"\nwhere = { above = 0.9 }\n", "'where' needs a metric"),
    (SOME + "some_below = 0.25\nover = \"defense.scale\"\nwhere = { metric = \"utility.accuracy\" }\n",
     "'where' needs 'above' and/or 'below'"),
    (SOME + "some_below = 0.25\nover = \"defense.scale\"\n"
            "where = { metric = \"utility.accuracy\", at_least = 0.9 }\n",
     "'where' has unknown key 'at_least'; accepted: metric, above, below"),
    (SOME + "some_below = 0.25\nover = \"defense.scale\"\nwhere = \"utility.accuracy > 0.9\"\n",
     "'where' must be a table"),
    (SOME + "some_below = 0.25\nover = \"defense.scale\"\nwhere = { metric = \"utility.accuracy\", above = \"x\" }\n",
     "where: 'above' must be a number; got 'x'"),
])
def test_a_malformed_key_is_a_one_line_error_naming_the_row(tmp_path, row, message):
    assert message in load_error(tmp_path, row)


def test_the_new_keys_load_into_the_row(tmp_path):
    rows = SWEEP_ROW + """\
        some_below = 0.25
        where = { metric = "utility.accuracy", above = 0.95 }
        aggregate = "median"
        min_seeds = 3
        reference = 0.2
        reference_source = "the authors' repo, eval.py"
        """
    row = load(write(tmp_path, SWEEP + textwrap.dedent(rows))).rows[0]
    assert (row.check, row.aggregate, row.min_seeds) == ("some", "median", 3)
    assert (row.reference, row.reference_source) == (0.2, "the authors' repo, eval.py")
    assert (row.condition.metric, row.condition.above, row.condition.below) == ("utility.accuracy", 0.95, None)
    assert check_text(row) == "some point < 0.25 with utility.accuracy > 0.95"
    plain = load(write(tmp_path, SWEEP + textwrap.dedent(SWEEP_ROW + "monotone = \"decreasing\"\n"))).rows[0]
    assert (plain.aggregate, plain.min_seeds, plain.reference, plain.condition) == ("mean", 1, None, None)


def test_a_where_metric_is_validated_like_the_metric(tmp_path, registry):
    rows = SWEEP_ROW + 'some_below = 0.25\nwhere = { metric = "utility.acc", above = 0.95 }\n'
    repro = load(write(tmp_path, SWEEP + textwrap.dedent(rows)))
    with pytest.raises(PrivbenchError, match="published row 1") as error:
        validate(repro, registry)
    assert "where-metric 'utility.acc' is not registered; accepted: " in str(error.value)
    assert "utility.accuracy" in str(error.value)


def test_an_attack_where_metric_needs_the_setting_to_pin_the_attack(tmp_path, registry):
    """A utility row reads one defense fit per point; its where-metric, an attack's, reads one
    (defense, attack) result, and two attacks ran on each fit."""
    rows = """\
        [[published]]
        setting = { defense = "noise" }
        metric = "utility.accuracy"
        over = "defense.scale"
        some_above = 0.9
        where = { metric = "attack.ssim", below = 0.5 }
        source = "F1"
        """
    repro = load(write(tmp_path, SWEEP + textwrap.dedent(rows)))
    with pytest.raises(PrivbenchError, match="where-metric attack.ssim: two results share scale=0.1"):
        validate(repro, registry)
    pinned = rows.replace('{ defense = "noise" }', '{ defense = "noise", attack = "inverse-network" }')
    validate(load(write(tmp_path, SWEEP + textwrap.dedent(pinned))), registry)


# -- checking, on hand-made outcomes ----------------------------------------------------------------------------

def stored(cells, metrics_of) -> dict:
    """Done cells as the store returns them, with ``metrics_of(cell)`` as their metrics."""
    return {cell.key: SimpleNamespace(status="done", reason=None, metrics=[
        SimpleNamespace(name=name, value=value) for name, value in metrics_of(cell).items()]) for cell in cells}


SSIM = {"identity": 0.95, "noise:scale=0.1": 0.80, "noise:scale=0.5": 0.21, "noise:scale=2.0": 0.05}
ACCURACY = {"identity": 0.97, "noise:scale=0.1": 0.97, "noise:scale=0.5": 0.962, "noise:scale=2.0": 0.55}


def metrics(ssim: dict, accuracy: dict, per_seed=lambda seed: 0.0):
    """attack.ssim on the inverse-network cells (plus ``per_seed(seed)``), utility.accuracy on all."""
    def of(cell):
        found = {"utility.accuracy": accuracy[cell.defense.spec]}
        if cell.attack.name == "inverse-network":
            found["attack.ssim"] = ssim[cell.defense.spec] + per_seed(cell.seed)
        return found
    return of


def results(tmp_path, registry, rows: str, metrics_of, seeds=(0,), quick=False):
    repro = load(write(tmp_path, SWEEP + textwrap.dedent(rows)))
    validate(repro, registry)
    selection = Selection(quick=quick, seeds=tuple(seeds))
    return evaluate(repro, registry, stored(plan_cells(repro, registry, selection), metrics_of), selection)


SOME_ROW = SWEEP_ROW + 'some_below = 0.25\nwhere = { metric = "utility.accuracy", above = 0.95 }\n'


def test_some_point_below_while_the_where_metric_holds(tmp_path, registry):
    result, = results(tmp_path, registry, SOME_ROW, metrics(SSIM, ACCURACY))
    assert result.holds is True
    # scale=2.0 has SSIM 0.05 too, but accuracy 0.55: only scale=0.5 satisfies both
    assert result.why == "scale=0.5: attack.ssim 0.21 < 0.25 at utility.accuracy 0.962 > 0.95"
    assert [p.mean for p in result.condition] == pytest.approx([0.97, 0.962, 0.55])
    assert measured_text(result) == "0.8 → 0.21 → 0.05 (n=1); utility.accuracy: 0.97 → 0.962 → 0.55"
    where = as_dicts([result])[0]["where"]
    assert (where["metric"], where["above"], where["below"]) == ("utility.accuracy", 0.95, None)
    assert [p["mean"] for p in where["measured"]] == pytest.approx([0.97, 0.962, 0.55])


def test_some_below_fails_naming_the_best_point_and_why(tmp_path, registry):
    costly = {**ACCURACY, "noise:scale=0.5": 0.93}  # hides the images, but costs accuracy
    result, = results(tmp_path, registry, SOME_ROW, metrics(SSIM, costly))
    assert result.holds is False
    assert result.why == ("no point < 0.25 with utility.accuracy > 0.95; best scale=0.1: attack.ssim 0.8 >= 0.25 "
                          "at utility.accuracy 0.97 > 0.95")
    nowhere = {spec: 0.9 for spec in ACCURACY}  # no point keeps the accuracy: the lowest SSIM is best
    result, = results(tmp_path, registry, SOME_ROW, metrics(SSIM, nowhere))
    assert result.holds is False
    assert result.why.endswith("best scale=2.0: attack.ssim 0.05 < 0.25 at utility.accuracy 0.9 <= 0.95")


def test_some_below_without_where_lists_every_point_that_satisfies_it(tmp_path, registry):
    result, = results(tmp_path, registry, SWEEP_ROW + "some_below = 0.25\n", metrics(SSIM, ACCURACY))
    assert result.holds is True
    assert result.why == "scale=0.5: attack.ssim 0.21 < 0.25; scale=2.0: attack.ssim 0.05 < 0.25"
    assert check_text(result.row) == "some point < 0.25"
    result, = results(tmp_path, registry, SWEEP_ROW + "some_below = 0.04\n", metrics(SSIM, ACCURACY))
    assert result.holds is False
    assert result.why == "no point < 0.04; best scale=2.0: attack.ssim 0.05 >= 0.04"


def test_some_above_across_settings_with_a_fit_metric(tmp_path, registry):
    """A utility row and a defense-fit where-metric: one fit per point though two attacks ran."""
    rows = """\
        [[published]]
        setting = { dataset = "digits" }
        metric = "utility.accuracy"
        across = [{ defense = "identity" }, { defense = "noise:scale=2.0" }]
        some_above = 0.9
        where = { metric = "utility.accuracy", below = 0.6 }
        source = "T1"
        """
    result, = results(tmp_path, registry, rows, metrics(SSIM, ACCURACY))
    assert result.holds is False  # identity is above 0.9 but not below 0.6; scale 2.0 the other way round
    assert result.why == ("no point > 0.9 with utility.accuracy < 0.6; best noise:scale=2.0: utility.accuracy "
                          "0.55 <= 0.9 at utility.accuracy 0.55 < 0.6")
    assert check_text(result.row) == "some point > 0.9 with utility.accuracy < 0.6"
    wide = rows.replace("below = 0.6", "below = 0.99")
    result, = results(tmp_path, registry, wide, metrics(SSIM, ACCURACY))
    assert result.holds is True
    assert result.why == "identity: utility.accuracy 0.97 > 0.9 at utility.accuracy 0.97 < 0.99"


def test_some_below_with_quick_false_is_not_checked_under_quick(tmp_path, registry):
    result, = results(tmp_path, registry, SOME_ROW + "quick = false\n", metrics(SSIM, ACCURACY), quick=True)
    assert result.holds is None and result.why == "not checked with --quick"
    result, = results(tmp_path, registry, SOME_ROW, metrics(SSIM, ACCURACY), quick=True)
    assert result.holds is True


def test_a_missing_where_value_fails_the_row(tmp_path, registry):
    def no_accuracy_at_half(cell):
        found = metrics(SSIM, ACCURACY)(cell)
        if cell.defense.spec == "noise:scale=0.5":
            del found["utility.accuracy"]
        return found
    result, = results(tmp_path, registry, SOME_ROW, no_accuracy_at_half)
    assert result.holds is False
    assert result.why == "no measured value for scale=0.5: seed 0: the cell reported no utility.accuracy"


# -- seeds: median and min_seeds ------------------------------------------------------------------------------

OUTLIER = {0: 0.0, 1: 0.01, 2: 0.6}  # one seed far off: mean +0.203, median +0.01


def test_median_reads_the_middle_seed_where_the_mean_reads_the_outlier(tmp_path, registry):
    rows = 'setting = { defense = "noise:scale=0.5", attack = "inverse-network" }\nmetric = "attack.ssim"\n' \
           'below = 0.3\nsource = "T1"\n'
    by_mean, = results(tmp_path, registry, "[[published]]\n" + rows, metrics(SSIM, ACCURACY, OUTLIER.get),
                       seeds=(0, 1, 2))
    assert by_mean.holds is False and by_mean.why == "0.413 is outside < 0.3"  # mean of 0.21, 0.22, 0.81
    by_median, = results(tmp_path, registry, "[[published]]\n" + rows + 'aggregate = "median"\n',
                         metrics(SSIM, ACCURACY, OUTLIER.get), seeds=(0, 1, 2))
    assert by_median.holds is True and by_median.why == "< 0.3"
    point = by_median.points[0]
    assert point.median == pytest.approx(0.22) and point.mean == pytest.approx(0.41333, abs=1e-4)
    assert measured_text(by_median) == "0.22 (median of 3 seeds)"
    assert measured_text(by_mean) == "0.4133 ± 0.34 (n=3)"
    shown = as_dicts([by_median])[0]
    assert shown["aggregate"] == "median" and shown["measured"][0]["median"] == pytest.approx(0.22)


def test_median_drives_trends_and_some_checks_too(tmp_path, registry):
    rows = SWEEP_ROW + 'monotone = "decreasing"\naggregate = "median"\n'
    bump = lambda seed: 0.9 if seed == 2 else 0.0  # noqa: E731 - a third seed far up at every point
    result, = results(tmp_path, registry, rows, metrics(SSIM, ACCURACY, bump), seeds=(0, 1, 2))
    assert result.holds is True and [p.center for p in result.points] == pytest.approx([0.80, 0.21, 0.05])
    by_mean, = results(tmp_path, registry, rows.replace('aggregate = "median"\n', ""),
                       metrics(SSIM, ACCURACY, bump), seeds=(0, 1, 2))
    assert by_mean.holds is True and [p.center for p in by_mean.points] == pytest.approx([1.1, 0.51, 0.35])
    some = SOME_ROW + 'aggregate = "median"\n'
    result, = results(tmp_path, registry, some, metrics(SSIM, ACCURACY, bump), seeds=(0, 1, 2))
    assert result.holds is True
    assert result.why == "scale=0.5: attack.ssim 0.21 < 0.25 at utility.accuracy 0.962 > 0.95"
    assert measured_text(result).endswith("(median of 3 seeds); utility.accuracy: 0.97 → 0.962 → 0.55")
    result, = results(tmp_path, registry, SOME_ROW, metrics(SSIM, ACCURACY, bump), seeds=(0, 1, 2))
    assert result.holds is False  # the mean at scale=0.5 is 0.51


def test_min_seeds_fails_a_row_measured_on_fewer_seeds(tmp_path, registry):
    rows = '[[published]]\nsetting = { defense = "identity" }\nmetric = "utility.accuracy"\nabove = 0.5\n' \
           'source = "T1"\nmin_seeds = 5\n'
    few, = results(tmp_path, registry, rows, metrics(SSIM, ACCURACY))
    assert few.holds is False and few.why == "needs at least 5 seeds, measured 1"
    three, = results(tmp_path, registry, rows, metrics(SSIM, ACCURACY), seeds=(0, 1, 2))
    assert three.holds is False and three.why == "needs at least 5 seeds, measured 3"
    enough, = results(tmp_path, registry, rows, metrics(SSIM, ACCURACY), seeds=range(5))
    assert enough.holds is True and enough.points[0].n == 5


def test_min_seeds_names_the_short_point_of_a_sequence(tmp_path, registry):
    rows = SWEEP_ROW + 'monotone = "decreasing"\nmin_seeds = 2\n'

    def one_seed_short(cell):  # seed 1 of scale=0.5 reports nothing
        found = metrics(SSIM, ACCURACY)(cell)
        return {} if (cell.defense.spec, cell.seed) == ("noise:scale=0.5", 1) else found
    result, = results(tmp_path, registry, rows, one_seed_short, seeds=(0, 1))
    assert result.holds is False and result.why == "needs at least 2 seeds, measured 1 at scale=0.5"
    result, = results(tmp_path, registry, rows, metrics(SSIM, ACCURACY), seeds=(0, 1))
    assert result.holds is True


def test_min_seeds_leaves_a_row_quick_does_not_check_unchecked(tmp_path, registry):
    rows = '[[published]]\nsetting = { defense = "identity" }\nmetric = "utility.accuracy"\nvalue = 0.97\n' \
           'tolerance = 0.01\nsource = "T1"\nmin_seeds = 5\n'
    result, = results(tmp_path, registry, rows, metrics(SSIM, ACCURACY), quick=True)
    assert result.holds is None


def test_reference_is_shown_not_checked(tmp_path, registry):
    rows = '[[published]]\nsetting = { defense = "identity" }\nmetric = "utility.accuracy"\nvalue = 0.97\n' \
           'tolerance = 0.01\nreference = 0.5\nreference_source = "authors repo, run.sh"\nsource = "T1"\n'
    result, = results(tmp_path, registry, rows, metrics(SSIM, ACCURACY))
    assert result.holds is True  # 0.97 against 0.97; the reference 0.5 is far off and plays no part
    assert as_dicts([result])[0]["reference"] == {"value": 0.5, "source": "authors repo, run.sh"}

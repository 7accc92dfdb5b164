"""Reproductions: a paper's experiment as a matrix config, with its published numbers as data.

A reproduction config (TOML, shipped in ``privbench/reproductions/``) holds

- the paper and what a run costs (``name``, ``paper``, ``summary``, ``dataset``, ``cost``,
  ``quick_cost``, optionally ``data``: how to get the data);
- one or more ``[[matrix]]`` tables in the shape ``privbench matrix -c`` reads (datasets, defenses,
  attacks, seeds; a list value is a sweep), run by the ordinary ``MatrixRunner``: same store, same
  cache, a rerun skips finished cells;
- a ``[quick]`` table of parameter overrides per plugin kind (``dataset``, ``defense``, ``attack``):
  ``key = value`` sets that parameter on every plugin of the kind that declares it, and
  ``plugin-name = { key = value }`` on that plugin only. ``--quick`` runs with them and checks only
  the shape facts;
- ``[[published]]`` rows: a ``setting`` (``{dataset = SPEC, defense = SPEC, attack = SPEC}``, each
  part optional, matched against the planned cells by name and the parameters it names), a registered
  ``metric``, the published ``value`` (``std`` where the paper gives one), its ``source`` (table or
  figure) and exactly one check:

  ============== =================================================================================
  ``tolerance``  |measured mean - value| <= tolerance (absolute; never checked with ``--quick``)
  ``below`` /    the measured mean is < below and/or > above; with ``across`` or ``over``, every
  ``above``      point is
  ``order``      ``"decreasing"`` or ``"increasing"`` along ``across``, a list of partial settings
                 merged onto ``setting`` (e.g. split depth); ``slack`` lets a step go against the
                 trend by at most that much
  ``monotone``   as ``order``, over the values of a swept parameter, ``over`` = ``defense.lam``
  ``less_than``  the mean is below (``greater_than``: above) that of another partial setting merged
                 onto ``setting``, by more than ``margin`` (default 0; a negative margin allows that
                 much the other way, "within 4 points": ``greater_than = ..., margin = -0.04``);
                 ``other_metric`` reads another metric at the other setting (a ceiling:
                 ``less_than = {attack = ...}, other_metric = "defense.keyed_ssim"``)
  ``spread``     max - min of the points (``across`` or ``over``) is at most this: a flat curve
  ``some_below`` some point of ``across`` or ``over`` is < some_below (``some_above``: >); with
                 ``where = {metric = "utility.accuracy", above = 0.95}`` (or ``below``), that metric
                 holds at the same point ("a dropout that hides the images and keeps the accuracy")
  ============== =================================================================================

  ``values`` gives published values per point, ``note`` a remark, ``quick = false`` keeps a shape
  fact out of ``--quick`` runs (e.g. an absolute level only the full training reaches).
  ``aggregate = "median"`` checks each point's median over seeds instead of its mean (accepted: mean,
  median); ``min_seeds = N`` fails the row when a point has fewer than N measured seeds.
  ``reference = NUMBER`` with ``reference_source = "..."`` (required with it) is the authors' own
  code's number on the same data: shown beside the published value, never checked.

A metric of kind ``utility`` or ``defense`` belongs to the defense's fit: its cells with different
attacks measure the same thing, so a setting need not name an attack for it. Any other metric needs
the setting to pin one (dataset, defense, attack) result; the same holds for a ``where`` metric.
``load`` checks a config's structure; ``validate`` checks it against the registry (plugins,
parameters, metrics, which cells a row reads).

The package: ``config`` (the config as data, ``load``), ``plan`` (the matrix, the planned cells,
which cells a row reads, ``validate``), ``checks`` (measuring and checking rows, ``evaluate``),
``table`` (the side-by-side output) and ``running`` (``run`` and the command); each imports only
those before it.
"""

from privbench.reproduce.checks import CHECKERS, Measured, RowResult, check_row, check_text, evaluate, measure
from privbench.reproduce.config import (
    AGGREGATES,
    CHECKS,
    FIT_METRIC_KINDS,
    KINDS,
    Condition,
    Reproduction,
    Row,
    Setting,
    find,
    load,
    parse_row,
    shipped,
    shipped_dir,
)
from privbench.reproduce.plan import (
    FULL,
    Point,
    Selection,
    condition_points,
    matrix_configs,
    plan_cells,
    row_points,
    validate,
)
from privbench.reproduce.running import command, run, stored_outcomes
from privbench.reproduce.table import (
    as_dicts,
    holds_text,
    listing,
    measured_text,
    published_text,
    reference_text,
    render,
    setting_text,
)

__all__ = [
    "AGGREGATES", "CHECKERS", "CHECKS", "FIT_METRIC_KINDS", "FULL", "KINDS", "Condition", "Measured", "Point",
    "Reproduction", "Row", "RowResult", "Selection", "Setting", "as_dicts", "check_row", "check_text", "command",
    "condition_points", "evaluate", "find", "holds_text", "listing", "load", "matrix_configs", "measure",
    "measured_text", "parse_row", "plan_cells", "published_text", "reference_text", "render", "row_points", "run",
    "setting_text", "shipped", "shipped_dir", "stored_outcomes", "validate",
]

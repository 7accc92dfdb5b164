"""The leaderboard's numbers: per dataset, one row per defense, one group per (defense, attack).

Everything here is plain data computed from the store's cells; the templates only lay it out.

- **Per threat model**, a defense's score is its worst case under that threat model's attacks: per
  seed, the lowest ``privacy.score`` over those attacks (not-applicable ones excluded), then mean ±
  std over seeds. Threat models are never mixed in one number except in the headline.
- The **headline**, which ranks the defenses, is per seed the lowest of those worst cases over the
  threat models the defense claims (``Defense.claims``), then mean ± std. A defense that claims
  nothing (the unprotected baseline), or whose plugin is not installed so that its claims are
  unknown, is ranked over every threat model of the page.
- A defense is **incomplete** when one of its cells failed, or an attack of the page has no cell for
  one of its seeds (not-applicable cells count as present): it is shown with the reasons and ranked
  below every complete defense, so a crash never reads as a defense the attack failed to break.
- The **utility budget**: a defense whose ``utility.drop`` (mean over seeds) exceeds the page's
  budget (default 0.05, five points of accuracy; ``privbench leaderboard --utility-budget``), or that
  reports none, is ranked below every complete defense within it, marked, and ranked among the others
  over it. A defense that breaks the service is trivially private (one that sends zeros leaks
  nothing), so it must not win: the ranking answers "the most private protection at an acceptable
  cost". We chose a budget over Pareto layers because a reader can check it in one column and set it
  to their own tolerance; the privacy-utility plot shows the whole front.
"""

from __future__ import annotations

import re
import shlex
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from privbench.store import Cell, Run

THREAT_MODELS = ("white-box", "black-box", "query-free", "known-plaintext")
SCORE = "privacy.score"
DEFAULT_UTILITY_BUDGET = 0.05  # utility.drop a ranked defense may cost: five points of accuracy


def unit(metric: str) -> str:
    """The unit of a metric from its registered spec, '' when it is no registered metric."""
    from privbench.metrics import unit as spec_unit
    return spec_unit(metric)


def decimals(value: float) -> int:
    """3 decimals below 10, 2 below 100, 1 above."""
    size = abs(value)
    return 3 if size < 10 else 2 if size < 100 else 1


def fmt(value: float | None, metric: str = "", digits: int | None = None) -> str:
    """A number at a precision that suits its size (small p-values in scientific notation)."""
    if value is None:
        return "—"
    if metric.endswith("p_value") and 0 < abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.{decimals(value) if digits is None else digits}f}"


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for a single value) and n of one metric over seeds."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat | None:
        values = list(values)
        if not values:
            return None
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))

    def parts(self, metric: str = "") -> tuple[str, str | None]:
        """The mean and the std as text, the std at the mean's precision (None when n = 1)."""
        digits = decimals(self.mean)
        std = None if self.std is None else fmt(self.std, metric, digits)
        return fmt(self.mean, metric, digits), std

    def text(self, metric: str = "") -> str:
        """``mean ± std`` (only the mean when n = 1); the templates show n beside it."""
        mean, std = self.parts(metric)
        return mean if std is None else f"{mean} ± {std}"


def metric_of(cell: Cell, name: str) -> float | None:
    return next((m.value for m in cell.metrics if m.name == name), None)


@dataclass(frozen=True)
class AttackColumn:
    """One attack spec of a page with the threat model its cells declared."""

    spec: str
    name: str
    threat_model: str


@dataclass
class Group:
    """One (defense, attack) pair of a dataset page: its cells, one per seed."""

    anchor: str
    defense: str
    attack: AttackColumn
    cells: list[Cell]

    @property
    def done(self) -> list[Cell]:
        return [c for c in self.cells if c.status == "done"]

    @cached_property
    def status(self) -> str:
        """done, not-applicable or failed when every seed agrees, else mixed."""
        statuses = {c.status for c in self.cells}
        return statuses.pop() if len(statuses) == 1 else "mixed"

    @cached_property
    def reason(self) -> str:
        """Every distinct reason of the group's cells, with the seeds it applies to."""
        reasons: dict[str, list[int]] = {}
        for cell in self.cells:
            if cell.reason:
                reasons.setdefault(f"{cell.status}: {cell.reason}", []).append(cell.seed)
        return "\n".join(f"{text} (seed {', '.join(map(str, seeds))})" for text, seeds in reasons.items())

    def stat(self, metric: str) -> Stat | None:
        return Stat.of(v for v in (metric_of(c, metric) for c in self.done) if v is not None)

    @cached_property
    def score(self) -> Stat | None:
        return self.stat(SCORE)

    @cached_property
    def metric_names(self) -> list[str]:
        return sorted({m.name for c in self.cells for m in c.metrics})


@dataclass(frozen=True)
class Problem:
    """Why a defense is incomplete: one attack's failed or missing cells."""

    attack: AttackColumn
    text: str

    def __str__(self) -> str:
        return f"{self.attack.spec} ({self.attack.threat_model}): {self.text}"


def seed_list(seeds: Iterable[int]) -> str:
    seeds = sorted(seeds)
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


@dataclass
class DefenseRow:
    """One defense spec (a parameter setting) of a dataset page, with its group per attack.

    ``claims`` are the threat models the defense claims protection under (None: its plugin is not
    installed, so they are unknown); ``threat_models`` those of the page's attacks, in column order."""

    spec: str
    name: str
    groups: dict[str, Group]
    claims: frozenset[str] | None = None
    threat_models: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rank: int = 0
    utility_budget: float = DEFAULT_UTILITY_BUDGET

    def values_by_seed(self, metric: str) -> dict[int, list[float]]:
        """Every done cell's value of ``metric``, grouped by seed (cells without it are left out)."""
        values: dict[int, list[float]] = {}
        for group in self.groups.values():
            for cell in group.done:
                value = metric_of(cell, metric)
                if value is not None:
                    values.setdefault(cell.seed, []).append(value)
        return values

    def per_seed(self, metric: str) -> dict[int, float]:
        """A per-defense metric (utility, cost) by seed: every attack's cell carries the same value."""
        return {seed: statistics.fmean(v) for seed, v in sorted(self.values_by_seed(metric).items())}

    def stat(self, metric: str) -> Stat | None:
        return Stat.of(self.per_seed(metric).values())

    @cached_property
    def worst_by_threat_model(self) -> dict[str, dict[int, float]]:
        """{threat model: {seed: the lowest privacy.score over that threat model's attacks}}."""
        worst: dict[str, dict[int, float]] = {}
        for group in self.groups.values():
            for cell in group.done:
                value = metric_of(cell, SCORE)
                if value is not None:
                    by_seed = worst.setdefault(group.attack.threat_model, {})
                    by_seed[cell.seed] = min(value, by_seed.get(cell.seed, value))
        return worst

    def threat_stat(self, threat_model: str) -> Stat | None:
        """The worst case under one threat model's attacks, mean ± std over seeds."""
        return Stat.of(self.worst_by_threat_model.get(threat_model, {}).values())

    @property
    def claimed(self) -> list[str]:
        """The claimed threat models in THREAT_MODELS' order ([] when none or unknown)."""
        return [tm for tm in THREAT_MODELS if tm in (self.claims or ())]

    @property
    def headline_models(self) -> list[str]:
        """The page's threat models the headline is taken over: the claimed ones, or every one when
        the defense claims nothing or its claims are unknown."""
        return [tm for tm in self.threat_models if not self.claims or tm in self.claims]

    def counts_in_headline(self, threat_model: str) -> bool:
        return threat_model in self.headline_models

    @property
    def headline_over(self) -> list[str]:
        """The headline's threat models that have a score."""
        return [tm for tm in self.headline_models if tm in self.worst_by_threat_model]

    @cached_property
    def headline(self) -> Stat | None:
        """Per seed the lowest per-threat-model worst case over ``headline_models``; mean ± std."""
        by_seed: dict[int, float] = {}
        for tm in self.headline_models:
            for seed, value in self.worst_by_threat_model.get(tm, {}).items():
                by_seed[seed] = min(value, by_seed.get(seed, value))
        return Stat.of(by_seed.values())

    @property
    def claims_text(self) -> str:
        if self.claims is None:
            return "claims unknown (its plugin is not installed): ranked over every threat model"
        if not self.claims:
            return "claims nothing: ranked over every threat model"
        return "claims " + ", ".join(self.claimed)

    @property
    def complete(self) -> bool:
        return not self.problems

    def problems_in(self, threat_model: str) -> list[Problem]:
        return [p for p in self.problems if p.attack.threat_model == threat_model]

    @property
    def attacks_scored(self) -> int:
        return sum(1 for g in self.groups.values() if g.score is not None)

    @property
    def attacks_applicable(self) -> int:
        return sum(1 for g in self.groups.values() if g.status != "not-applicable")

    @property
    def within_budget(self) -> bool:
        """Whether its utility.drop (mean over seeds) is known and at most the page's budget."""
        drop = self.stat("utility.drop")
        return drop is not None and drop.mean <= self.utility_budget + 1e-12

    @property
    def budget_text(self) -> str:
        """Why a defense is ranked below the budget line, for its mark."""
        drop = self.stat("utility.drop")
        if drop is None:
            return "no utility.drop measured: ranked below the defenses within the utility budget"
        return (f"utility.drop {drop.mean:.3f} is over the budget of {self.utility_budget:g}: ranked below "
                "the defenses within it")

    def sort_key(self) -> tuple:
        """Complete defenses first; among them those within the utility budget; then by the headline
        (higher first, none last), ties by utility.accuracy, then by name."""
        score, utility = self.headline, self.stat("utility.accuracy")
        return (not self.complete, not self.within_budget, score is None, -(score.mean if score else 0),
                -(utility.mean if utility else 0), self.spec)


def find_problems(row: DefenseRow, attacks: list[AttackColumn]) -> list[Problem]:
    """Every page attack with a failed cell, a done cell without privacy.score, or no cell for one
    of the defense's seeds (a not-applicable cell counts as present)."""
    seeds = {c.seed for group in row.groups.values() for c in group.cells}
    problems = []
    for attack in attacks:
        group = row.groups.get(attack.spec)
        cells = group.cells if group else []
        missing = seeds - {c.seed for c in cells}
        if missing:
            problems.append(Problem(attack, f"no cell for {seed_list(missing)}: not run against this defense"))
        failed: dict[str, list[int]] = {}
        for cell in cells:
            if cell.status == "done" and metric_of(cell, SCORE) is None:
                failed.setdefault(f"done but recorded no {SCORE}", []).append(cell.seed)
            elif cell.status not in ("done", "not-applicable"):
                failed.setdefault(f"{cell.status}: {cell.reason or 'no reason recorded'}", []).append(cell.seed)
        problems += [Problem(attack, f"{text} ({seed_list(s)})") for text, s in failed.items()]
    return problems


@dataclass
class DatasetPage:
    """Everything one dataset page shows."""

    spec: str
    filename: str
    attacks: list[AttackColumn]
    rows: list[DefenseRow]
    cells: list[Cell]
    runs: dict[int, Run]
    images: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # cell id: [(name, path)]
    plots: list = field(default_factory=list)
    utility_budget: float = DEFAULT_UTILITY_BUDGET

    @property
    def over_budget(self) -> int:
        """How many complete defenses are ranked below the budget line."""
        return sum(1 for row in self.rows if row.complete and not row.within_budget)

    @property
    def seeds(self) -> list[int]:
        return sorted({c.seed for c in self.cells})

    @property
    def groups(self) -> list[Group]:
        return [row.groups[a.spec] for row in self.rows for a in self.attacks if a.spec in row.groups]

    def count(self, status: str) -> int:
        return sum(1 for c in self.cells if c.status == status)

    @property
    def threat_models(self) -> list[str]:
        """The threat models of the page's attacks, in column order."""
        return unique(a.threat_model for a in self.attacks)

    @property
    def leader(self) -> DefenseRow | None:
        """The top-ranked defense when it is complete, within the utility budget and has a headline
        score."""
        top = self.rows[0] if self.rows else None
        ok = top is not None and top.complete and top.within_budget and top.headline is not None
        return top if ok else None

    def threat_groups(self) -> list[tuple[str, int]]:
        """(threat model, number of attack columns) in column order, for the grouped header."""
        spans: list[tuple[str, int]] = []
        for attack in self.attacks:
            if spans and spans[-1][0] == attack.threat_model:
                spans[-1] = (attack.threat_model, spans[-1][1] + 1)
            else:
                spans.append((attack.threat_model, 1))
        return spans

    @property
    def versions(self) -> dict[str, str]:
        """The versions of the runs behind the page's cells (the latest run wins on a conflict)."""
        merged: dict[str, str] = {}
        for run_id in sorted({c.run_id for c in self.cells}):
            run = self.runs.get(run_id)
            merged.update({str(k): str(v) for k, v in ((run.versions or {}) if run else {}).items()})
        return merged

    @property
    def reproduce(self) -> str:
        """The ``privbench matrix`` command that runs every cell of this page."""
        return reproduce_command(self.spec, self.cells)

    def gallery(self) -> list[tuple[AttackColumn, list[tuple[DefenseRow, Cell, str]]]]:
        """Per attack, one saved image per defense (its lowest seed), in ranking order."""
        shown = []
        for attack in self.attacks:
            figures = []
            for row in self.rows:
                group = row.groups.get(attack.spec)
                first = next((c for c in (group.done if group else []) if self.images.get(c.id)), None)
                if first is not None:
                    figures.append((row, first, self.images[first.id][0][1]))
            if figures:
                shown.append((attack, figures))
        return shown


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def reproduce_command(dataset_spec: str, cells: list[Cell]) -> str:
    """``privbench matrix`` with the page's dataset, defense and attack specs and seeds, shell-quoted."""
    seeds = ",".join(str(s) for s in sorted({c.seed for c in cells}))
    parts = ["privbench matrix", f"--dataset {shlex.quote(dataset_spec)}"]
    parts += [f"--defense {shlex.quote(spec)}" for spec in unique(c.defense_spec for c in cells)]
    parts += [f"--attack {shlex.quote(spec)}" for spec in unique(c.attack_spec for c in cells)]
    parts.append(f"--seeds {seeds}")
    return " \\\n    ".join(parts)


def attack_columns(cells: list[Cell]) -> list[AttackColumn]:
    """The attack specs of a page, grouped by threat model in DESIGN.md's order."""
    columns = {c.attack_spec: AttackColumn(c.attack_spec, c.attack, c.threat_model) for c in cells}

    def order(column: AttackColumn) -> tuple:
        known = column.threat_model in THREAT_MODELS
        return (not known, THREAT_MODELS.index(column.threat_model) if known else 0, column.spec)

    return sorted(columns.values(), key=order)


def defense_rows(cells: list[Cell], attacks: list[AttackColumn],
                 claims: Mapping[str, frozenset[str]] | None = None,
                 utility_budget: float = DEFAULT_UTILITY_BUDGET) -> list[DefenseRow]:
    """One row per defense spec, ranked, each with its (defense, attack) groups, its claims (looked up
    by defense name in ``claims``; None when absent), the reasons it is incomplete and the page's
    utility budget."""
    by_attack = {a.spec: a for a in attacks}
    threat_models = unique(a.threat_model for a in attacks)
    rows: dict[str, DefenseRow] = {}
    for cell in cells:
        row = rows.setdefault(cell.defense_spec, DefenseRow(
            cell.defense_spec, cell.defense, {}, (claims or {}).get(cell.defense), threat_models,
            utility_budget=utility_budget))
        group = row.groups.setdefault(cell.attack_spec, Group("", cell.defense_spec, by_attack[cell.attack_spec], []))
        group.cells.append(cell)
    for row in rows.values():
        row.problems = find_problems(row, attacks)
    ranked = sorted(rows.values(), key=DefenseRow.sort_key)
    for rank, row in enumerate(ranked, 1):
        row.rank = rank
        for group in row.groups.values():
            group.anchor = f"g{rank}-{[a.spec for a in attacks].index(group.attack.spec) + 1}"
    return ranked


def page_filenames(specs: list[str]) -> dict[str, str]:
    """A safe, unique ``.html`` file name per dataset spec (``digits:target=digit`` → ``digits-target-digit``)."""
    names: dict[str, str] = {}
    for spec in specs:
        stem = re.sub(r"[^A-Za-z0-9_]+", "-", spec).strip("-_")[:80] or "dataset"
        candidate, number = stem, 2
        while candidate + ".html" in names.values() or candidate == "index":
            candidate, number = f"{stem}-{number}", number + 1
        names[spec] = candidate + ".html"
    return names


def dataset_pages(cells: list[Cell], runs: dict[int, Run],
                  claims: Mapping[str, frozenset[str]] | None = None,
                  utility_budget: float = DEFAULT_UTILITY_BUDGET) -> list[DatasetPage]:
    """One page per dataset spec, in the store's order; ``claims`` maps a defense name to the threat
    models it claims (``Defense.claims``); a defense missing from it has unknown claims. Defenses over
    ``utility_budget`` (utility.drop) rank below those within it."""
    by_dataset: dict[str, list[Cell]] = {}
    for cell in cells:
        by_dataset.setdefault(cell.dataset_spec, []).append(cell)
    filenames = page_filenames(list(by_dataset))
    pages = []
    for spec, members in by_dataset.items():
        attacks = attack_columns(members)
        rows = defense_rows(members, attacks, claims, utility_budget)
        pages.append(DatasetPage(spec, filenames[spec], attacks, rows, members, runs,
                                 utility_budget=utility_budget))
    return pages

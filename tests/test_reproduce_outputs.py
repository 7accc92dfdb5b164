"""The authors' code's number (``reference``), the median and the some-point check in what
``privbench reproduce`` prints (table, CSV, JSON) and on the leaderboard's Reproductions page.

The store is synthetic: every planned cell of a small digits config is saved done, through the
store's own API, with metrics written here per cell and seed. The command then finds every cell
finished (nothing trains) and prints the rows; the values asserted are the ones written.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import textwrap

import pytest
from click.testing import CliRunner

from leaderboard import render_site
from privbench.cli import main
from privbench.reproduce import load, plan_cells
from privbench.store import CellOutcome, Store

CONFIG = """\
    name = "toy-reference"
    paper = "test-only: a second reference number beside the paper's"
    cost = "seconds"

    [[matrix]]
    datasets = ["digits"]
    defenses = ["identity"]
    attacks = ["inverse-network"]
    seeds = [0, 1, 2]

    [[matrix.defense]]
    name = "noise"
    scale = [0.5, 2.0]

    [[published]]
    setting = { defense = "identity", attack = "inverse-network" }
    metric = "attack.psnr"
    value = 31.25
    tolerance = 100
    reference = 29.5
    reference_source = "authors repo eval.py run"
    source = "Table 3, identity"

    [[published]]
    setting = { defense = "noise:scale=2.0", attack = "inverse-network" }
    metric = "attack.ssim"
    below = 0.3
    aggregate = "median"
    source = "Table 3, noise"

    [[published]]
    setting = { defense = "noise", attack = "inverse-network" }
    metric = "attack.ssim"
    over = "defense.scale"
    some_below = 0.25
    where = { metric = "utility.accuracy", above = 0.95 }
    source = "Figure 4"
    """

# per defense spec: (attack.psnr, attack.ssim per seed 0, 1, 2, utility.accuracy)
MEASURED = {"identity": (30.0, (0.9, 0.9, 0.9), 0.97),
            "noise:scale=0.5": (18.0, (0.2, 0.22, 0.24), 0.96),
            "noise:scale=2.0": (9.0, (0.1, 0.12, 0.8), 0.6)}


def write_config(folder, text: str = CONFIG):
    path = folder / "toy-reference.toml"
    path.write_text(textwrap.dedent(text))
    return path


def synthetic_store(path, config, registry) -> Store:
    """Every planned cell of the config saved done, with the MEASURED metrics."""
    store = Store(f"sqlite:///{path}")
    run = store.start_run({}, {}, "test")
    now = dt.datetime(2024, 1, 1)
    for cell in plan_cells(load(str(config)), registry):
        psnr, ssim, accuracy = MEASURED[cell.defense.spec]
        store.save_cell(run, CellOutcome(
            key=cell.key, dataset=cell.dataset.name, dataset_spec=cell.dataset.spec,
            dataset_params=cell.dataset.params, defense=cell.defense.name, defense_spec=cell.defense.spec,
            defense_params=cell.defense.params, attack=cell.attack.name, attack_spec=cell.attack.spec,
            attack_params=cell.attack.params, seed=cell.seed, threat_model="black-box", status="done",
            started_at=now, finished_at=now,
            metrics={"attack.psnr": psnr, "attack.ssim": ssim[cell.seed], "utility.accuracy": accuracy}))
    return store


@pytest.fixture(scope="module")
def toy(tmp_path_factory, registry):
    folder = tmp_path_factory.mktemp("reference")
    config = write_config(folder)
    db = folder / "store.db"
    synthetic_store(db, config, registry)
    return folder, config, db


def reproduce(config, db, *args):
    result = CliRunner().invoke(main, ["reproduce", str(config), "--db", str(db), "--quiet", *args],
                                env={"COLUMNS": "2000"})
    assert result.exit_code == 0, result.output
    assert "3 of 3 checked rows hold; 0 cells run, 9 already finished" in result.output
    return result


def table_rows(output: str) -> list[dict[str, str]]:
    """The rich table's body lines by column name, the names read from its header line."""
    header = next(line for line in output.splitlines() if line.startswith("┃"))
    names = [cell.strip() for cell in header.split("┃")[1:-1]]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines()
            if line.startswith("│")]
    return [dict(zip(names, row, strict=True)) for row in rows if len(row) == len(names)]


def test_the_table_has_an_authors_code_column_beside_published(toy):
    _, config, db = toy
    rows = table_rows(reproduce(config, db).stdout)
    assert list(rows[0])[:5] == ["setting", "metric", "published", "authors' code", "check"]
    assert [(row["published"], row["authors' code"]) for row in rows] == \
        [("31.25", "29.5"), ("(shape)", "—"), ("(shape)", "—")]
    assert rows[1]["measured (mean ± std, n seeds)"] == "0.12 (median of 3 seeds)"  # 0.1, 0.12, 0.8
    assert rows[2]["check"] == "some point < 0.25 with utility.accuracy > 0.95"
    assert rows[2]["measured (mean ± std, n seeds)"] == \
        "0.22 ± 0.02 → 0.34 ± 0.4 (n=3); utility.accuracy: 0.96 → 0.6"
    assert [row["holds"] for row in rows] == ["yes", "yes", "yes"]


def test_without_a_reference_the_table_has_no_authors_code_column(tmp_path, registry):
    config = write_config(tmp_path, CONFIG.replace('    reference = 29.5\n    reference_source = '
                                                   '"authors repo eval.py run"\n', ""))
    db = tmp_path / "store.db"
    synthetic_store(db, config, registry)
    rows = table_rows(reproduce(config, db).stdout)
    assert list(rows[0])[:4] == ["setting", "metric", "published", "check"]
    assert "authors' code" not in reproduce(config, db).stdout


def test_csv_has_the_reference_and_its_source(toy):
    _, config, db = toy
    rows = list(csv.DictReader(io.StringIO(reproduce(config, db, "--format", "csv").stdout)))
    assert list(rows[0])[:5] == ["setting", "metric", "published", "reference", "check"]
    assert [(row["reference"], row["reference_source"]) for row in rows] == \
        [("29.5", "authors repo eval.py run"), ("", ""), ("", "")]
    assert rows[1]["measured"] == "0.12 (median of 3 seeds)"
    assert rows[2]["why"] == "scale=0.5: attack.ssim 0.22 < 0.25 at utility.accuracy 0.96 > 0.95"


def test_json_has_the_reference_the_median_and_the_where_points(toy):
    _, config, db = toy
    report = json.loads(reproduce(config, db, "--format", "json").stdout)
    first, median, some = report["rows"]
    assert first["reference"] == {"value": 29.5, "source": "authors repo eval.py run"}
    assert first["published"]["value"] == 31.25 and first["measured"][0]["mean"] == pytest.approx(30.0)
    assert median["reference"] is None and median["aggregate"] == "median"
    assert median["measured"][0]["median"] == pytest.approx(0.12)
    assert median["measured"][0]["mean"] == pytest.approx(0.34)
    assert some["where"]["metric"] == "utility.accuracy" and some["where"]["above"] == 0.95
    assert [p["mean"] for p in some["where"]["measured"]] == pytest.approx([0.96, 0.6])
    assert [p["label"] for p in some["measured"]] == ["scale=0.5", "scale=2.0"]


def test_the_leaderboard_page_shows_the_reference_beside_published(toy, tmp_path):
    _, config, db = toy
    index = render_site(Store(f"sqlite:///{db}"), tmp_path / "site", claims={}, reproductions=[config])
    html = (index.parent / "reproductions.html").read_text()
    header = re.search(r"<thead>(.*?)</thead>", html, re.S).group(1)
    columns = re.findall(r"<th[^>]*>([^<]+)</th>", header)
    assert columns[:4] == ["setting", "metric", "published", "authors' code"]
    body = re.search(r"<tbody>(.*?)</tbody>", html, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]
    assert [row[2] for row in cells] == ["31.25", "(shape)", "(shape)"]
    assert '<span title="authors repo eval.py run">29.5</span>' in cells[0][3]
    assert '<div class="note">authors repo eval.py run</div>' in cells[0][3]
    assert [row[3].strip() for row in cells[1:]] == ["—", "—"]
    assert "0.12 (median of 3 seeds)" in cells[1][5]

"""The static HTML leaderboard: rendered from a small real matrix, offline, escaped, traceable."""

from __future__ import annotations

import datetime as dt
import html
import io
import json
import re
import shlex
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_matrix

from leaderboard import render_site
from leaderboard.model import Stat, dataset_pages, page_filenames
from leaderboard.plot import Point, mark_pareto
from leaderboard.render import installed_claims
from privbench.core import Artifact
from privbench.params import parse_spec
from privbench.schedule import MatrixConfig, plan
from privbench.store import CellOutcome, Store

SMALL_DIGITS = ("digits", {"target_epochs": 5, "limit": 500})
XSS = "<script>alert(1)</script>"
_SHARED: dict[str, Store] = {}


def small_matrix_store(registry, shared_cache, tmp_path_factory) -> Store:
    """One small real matrix, shared with the browser test: identity and a noise sweep against a
    reconstruction, an attribute and a class-membership attack (not applicable to digits' parity
    target) on 500 digits, two seeds; plus mnist, which is not on disk, so its cells fail."""
    if "store" not in _SHARED:
        folder = tmp_path_factory.mktemp("leaderboard-matrix")
        store, _ = run_matrix(
            registry, f"sqlite:///{folder / 'store.db'}", shared_cache, datasets=[SMALL_DIGITS, ("mnist", {})],
            defenses=[("identity", {}), ("noise", {"scale": [0.5, 2.0]})],
            attacks=[("inverse-network", {"epochs": 3}), ("attribute-inference", {"epochs": 3}),
                     ("class-membership", {"out": "held-out"})],
            seeds=[0, 1])
        _SHARED["store"] = store
    return _SHARED["store"]


@pytest.fixture(scope="module")
def store(registry, shared_cache, tmp_path_factory) -> Store:
    return small_matrix_store(registry, shared_cache, tmp_path_factory)


@pytest.fixture(scope="module")
def site(store, tmp_path_factory) -> Path:
    return render_site(store, tmp_path_factory.mktemp("leaderboard") / "site").parent


@pytest.fixture(scope="module")
def digits_html(site) -> str:
    return (site / "digits-limit-500-target_epochs-5.html").read_text()


class Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def all(self, tag: str) -> list[dict]:
        return [attrs for name, attrs in self.tags if name == tag]


def test_site_has_an_index_and_a_page_per_dataset(site):
    assert sorted(p.name for p in site.glob("*.html")) == [
        "digits-limit-500-target_epochs-5.html", "index.html", "mnist.html"]
    index = (site / "index.html").read_text()
    assert 'href="digits-limit-500-target_epochs-5.html"' in index and 'href="mnist.html"' in index
    assert "digits:limit=500,target_epochs=5" in index
    assert sorted(p.name for p in (site / "static").iterdir()) == ["leaderboard.css", "leaderboard.js"]


def test_site_works_offline(site):
    """No http(s) reference anywhere; every script, stylesheet, image and link is a local file."""
    for path in site.rglob("*"):
        if path.suffix in (".html", ".css", ".js"):
            text = path.read_text()
            assert "http://" not in text and "https://" not in text, path
            assert "@import" not in text and "url(" not in text, path
    for page in site.glob("*.html"):
        tags = Tags(page.read_text())
        assert [s.get("src") for s in tags.all("script")] == ["static/leaderboard.js"]
        refs = [a["src"] for a in tags.all("img")] + [a["href"] for a in tags.all("a") + tags.all("link")]
        for ref in refs:
            if not ref.startswith(("#", "data:")):
                assert (site / ref.split("#")[0]).is_file(), (page.name, ref)


def test_ranking_ranks_by_the_headline_worst_case(store, digits_html):
    """Every attack here is black-box and every defense claims black-box (identity claims nothing and
    is ranked over every threat model), so the headline is the worst case over every attack."""
    cells = [c for c in store.cells() if c.dataset == "digits"]
    scores: dict[tuple[str, int], list[float]] = {}
    for cell in cells:
        value = next((m.value for m in cell.metrics if m.name == "privacy.score"), None)
        if value is not None:
            scores.setdefault((cell.defense_spec, cell.seed), []).append(value)
    expected = {}
    for (defense, _), values in scores.items():
        expected.setdefault(defense, []).append(min(values))
    page = dataset_pages(cells, {}, installed_claims())[0]
    for row in page.rows:
        assert row.headline.mean == pytest.approx(sum(expected[row.spec]) / 2)
        assert row.headline.n == 2 and row.attacks_scored == 2 and row.attacks_applicable == 2
        assert row.complete and row.headline_over == ["black-box"]
    ranked = [row.spec for row in page.rows]
    drops: dict[str, list[float]] = {}
    for cell in cells:
        drops.setdefault(cell.defense_spec, []).extend(m.value for m in cell.metrics if m.name == "utility.drop")
    over = {d: sum(v) / len(v) > 0.05 for d, v in drops.items()}  # the default utility budget
    assert ranked == sorted(expected, key=lambda d: (over[d], -sum(expected[d])))
    shown = re.findall(r'data-col="defense" data-value="([^"]+)"', digits_html)
    assert shown == ranked and set(shown) == {"identity", "noise:scale=0.5", "noise:scale=2.0"}


def test_ranking_shows_every_number_with_its_metric_spread_and_n(digits_html):
    for metric in ("utility.accuracy", "utility.drop", "privacy.score", "cost.fit_s",
                   "cost.encode_ms_per_image"):
        assert metric in digits_html
    assert "worst case per threat model" in digits_html and "Headline" in digits_html
    assert "claims nothing: ranked over every threat model" in digits_html  # identity
    assert "claims white-box, black-box, query-free" in digits_html  # noise
    assert "status incomplete" not in digits_html  # every digits cell is done or not applicable
    assert re.search(r'class="spread">± \d\.\d{3} · n=2<', digits_html)
    for threat_model in ("black-box",):
        assert f'<span class="tm">{threat_model}</span>' in digits_html


def test_heatmap_marks_not_applicable_and_failed_cells_with_their_reason(site, digits_html):
    assert re.search(r'<td class="hm not-applicable" title="not-applicable: class-membership needs', digits_html)
    assert "background-color: #" in digits_html  # scored cells are coloured
    mnist = (site / "mnist.html").read_text()
    assert re.search(r'<td class="hm failed" title="failed: PrivbenchError: dataset &#39;mnist&#39; not found',
                     mnist)
    assert '<details class="trace"><summary>traceback</summary><pre>Traceback' in mnist


def test_privacy_utility_plot_has_sweep_lines_pareto_front_and_a_choice(digits_html):
    tags = Tags(digits_html)
    options = re.findall(r'<option value="p\d">([^<]+)</option>', digits_html)
    assert options == ["headline: worst case over the claimed threat models", "worst case under black-box attacks",
                       "attribute-inference:epochs=3 (black-box)",
                       "inverse-network:epochs=3 (black-box)"]  # class-membership never applied: no plot
    assert len(tags.all("svg")) == 4 and len([p for p in tags.all("figure") if "data-plot" in p]) == 4
    assert len([p for p in tags.all("polyline") if p.get("class") == "sweep"]) == 4  # noise, per plot
    assert [p for p in tags.all("circle") if p.get("class") == "ring"]
    assert "utility.accuracy (fraction, target task)" in digits_html
    assert "privacy.score under inverse-network:epochs=3 [0, 1]" in digits_html


def test_pareto_front_keeps_the_non_dominated_points():
    def point(x, y):
        return Point(f"{x},{y}", "#000", Stat(x, None, 1), Stat(y, None, 1))

    points = [point(0.9, 0.1), point(0.5, 0.5), point(0.4, 0.4), point(0.1, 0.9), point(0.9, 0.05)]
    mark_pareto(points)
    assert [p.label for p in points if p.pareto] == ["0.9,0.1", "0.5,0.5", "0.1,0.9"]


def test_reconstruction_grids_are_written_and_shown(site, store, digits_html):
    gallery = digits_html.split('id="reconstructions"')[1].split("</section>")[0]
    sources = [a["src"] for a in Tags(gallery).all("img")]
    assert len(sources) == 3  # one per defense under inverse-network
    written = sorted((site / "img").iterdir())
    done = [c for c in store.cells() if c.attack == "inverse-network" and c.status == "done"]
    assert len(written) == len(done) == 6
    for path in written:
        assert re.fullmatch(r"[0-9a-f]+-reconstruction\.png", path.name)
        assert path.read_bytes().startswith(b"\x89PNG")
    assert all(src.startswith("img/") for src in sources)


def test_cell_details_show_metrics_per_seed_params_versions_and_timings(store, digits_html):
    cell = next(c for c in store.cells() if c.attack == "inverse-network" and c.status == "done")
    for metric in cell.metrics:
        assert f"<code>{metric.name}</code>" in digits_html
    for text in ("seed 0", "seed 1", "epochs=3", "scale=0.5", "privbench 0.1.0", "torch ", "duration_s",
                 "UTC", store.runs()[0].host, "Runs and timings", "Metrics per seed"):
        assert text in digits_html, text


def test_reproduce_command_plans_exactly_the_stored_cells(registry, store, digits_html):
    command = digits_html.split('<pre class="command"><code>')[1].split("</code>")[0]
    words = shlex.split(html.unescape(command).replace("\\\n", " "))
    assert words[:2] == ["privbench", "matrix"]
    options: dict[str, list[str]] = {}
    for flag, value in zip(words[2::2], words[3::2], strict=True):
        options.setdefault(flag, []).append(value)
    config = MatrixConfig(datasets=[parse_spec(s) for s in options["--dataset"]],
                          defenses=[parse_spec(s) for s in options["--defense"]],
                          attacks=[parse_spec(s) for s in options["--attack"]],
                          seeds=[int(s) for s in options["--seeds"][0].split(",")])
    planned = {cell.key for cell in plan(registry, config)}
    assert planned == {c.key for c in store.cells() if c.dataset == "digits"}


def _evil_store(tmp_path: Path) -> Store:
    """A store whose every string is hostile HTML, written through the store's own API."""
    store = Store(f"sqlite:///{tmp_path / 'evil.db'}")
    run = store.start_run({"argv": [XSS]}, {"<b>pkg</b>": "<i>1.0</i>"}, "<svg onload=alert(4)>")
    now = dt.datetime(2024, 1, 1)
    from PIL import Image
    png = io.BytesIO()
    Image.new("RGB", (20, 10), "white").save(png, format="PNG")
    common = dict(dataset="digits<b>", dataset_spec="digits:target=<b>x</b>", dataset_params={"<k>": "<v>"},
                  defense=XSS, defense_spec=XSS, defense_params={"x": XSS}, attack_params={},
                  started_at=now, finished_at=now)
    store.save_cell(run, CellOutcome(
        key="k1", attack="evil", attack_spec='evil"><img src=x onerror=alert(2)>', seed=0,
        threat_model="<i>tm</i>", status="done",
        metrics={"privacy.score": 0.5, "utility.accuracy": 0.9, "<b>metric</b>": 1.0},
        artifacts=[Artifact("../../../evil<script>.png", "image/png", png.getvalue()),
                   Artifact("page.html", "text/html", XSS.encode())], **common))
    store.save_cell(run, CellOutcome(
        key="k2", attack="other", attack_spec="</script><script>alert(3)</script>", seed=0,
        threat_model="white-box", status="failed", reason="</script><script>alert(5)</script>",
        error=f"Traceback\n{XSS}", **common))
    return store


def test_store_strings_render_as_text(tmp_path):
    site = render_site(_evil_store(tmp_path), tmp_path / "out" / "site").parent
    pages = list(site.glob("*.html"))
    assert len(pages) == 2
    for page in pages:
        text = page.read_text()
        assert "<script>alert(" not in text and "<img src=x" not in text
        tags = Tags(text)
        assert {"b", "i", "svg"} & {name for name, _ in tags.tags} <= {"svg"}
        assert all(not attr.startswith("on") for _, attrs in tags.tags for attr in attrs)
        assert [s.get("src") for s in tags.all("script")] == ["static/leaderboard.js"]
        assert [a["src"] for a in tags.all("img")] in ([], ["img/k1-evil_script_.png"] * 2)
    dataset = (site / "digits-target-b-x-b.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dataset
    assert "&lt;/script&gt;&lt;script&gt;alert(5)&lt;/script&gt;" in dataset
    assert sorted(p.name for p in (site / "img").iterdir()) == ["k1-evil_script_.png"]  # no HTML artifact
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["site"]  # nothing was written beside the site


def _outcome(key: str, defense: str, attack: str, seed: int, status: str = "done", *,
             threat_model: str = "black-box", **metrics) -> CellOutcome:
    now = dt.datetime(2024, 1, 1)
    reasons = {"failed": "RuntimeError: boom", "not-applicable": f"{attack} needs what {defense} withholds"}
    return CellOutcome(key=key, dataset="digits", dataset_spec="digits", dataset_params={}, defense=defense,
                       defense_spec=defense, defense_params={}, attack=attack, attack_spec=attack, attack_params={},
                       seed=seed, threat_model=threat_model, status=status, started_at=now, finished_at=now,
                       reason=reasons.get(status), metrics=metrics)


def _store(tmp_path: Path, outcomes: list[CellOutcome]) -> Store:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    run = store.start_run({}, {}, "host")
    for outcome in outcomes:
        store.save_cell(run, outcome)
    return store


def _scored(defense: str, attack: str, scores: tuple[float, ...], threat_model: str = "black-box",
            accuracy: float = 0.9, drop: float = 0.0) -> list[CellOutcome]:
    """One done cell per seed (0, 1, ...) with the given privacy.score."""
    return [_outcome(f"{defense}/{attack}/{seed}", defense, attack, seed, threat_model=threat_model,
                     **{"privacy.score": score, "utility.accuracy": accuracy, "utility.drop": drop})
            for seed, score in enumerate(scores)]


def _failed(defense: str, attack: str, seeds: int = 2) -> list[CellOutcome]:
    return [_outcome(f"{defense}/{attack}/{seed}", defense, attack, seed, "failed") for seed in range(seeds)]


def test_a_partly_failed_pair_makes_the_defense_incomplete_and_is_left_out_of_its_numbers(tmp_path):
    store = _store(tmp_path, [
        _outcome("a", "blur", "inv", 0, **{"privacy.score": 0.8, "utility.accuracy": 0.9}),
        _outcome("b", "blur", "inv", 1, "failed"),
        _outcome("c", "blur", "attr", 0, **{"privacy.score": 0.6, "utility.accuracy": 0.9}),
        _outcome("d", "blur", "attr", 1, **{"privacy.score": 0.4, "utility.accuracy": 0.7})])
    row = dataset_pages(store.cells(), {})[0].rows[0]
    assert row.groups["inv"].status == "mixed" and not row.complete
    assert [str(p) for p in row.problems] == ["inv (black-box): failed: RuntimeError: boom (seed 1)"]
    assert row.headline == Stat(0.5, pytest.approx(0.1414, abs=1e-4), 2)  # seed 0: min(0.8, 0.6); seed 1: 0.4
    assert row.stat("utility.accuracy").mean == pytest.approx(0.8)
    html = render_site(store, tmp_path / "site", claims={}).with_name("digits.html").read_text()
    assert "⚠ 0.800" in html and "⚠ 0.500" in html and "failed: RuntimeError: boom (seed 1)" in html


def test_a_defense_whose_attacks_crashed_ranks_below_complete_ones_with_the_reason(tmp_path):
    """A crash is no defense: 'crashy' scores 0.9 on the attack that ran, far above 'solid', yet ranks below it."""
    store = _store(tmp_path, [*_scored("solid", "inv", (0.2, 0.2)), *_scored("solid", "attr", (0.3, 0.3)),
                              *_failed("crashy", "inv"), *_scored("crashy", "attr", (0.9, 0.9)),
                              *_failed("dead", "inv"), *_failed("dead", "attr")])
    page = dataset_pages(store.cells(), {}, {})[0]
    assert [row.spec for row in page.rows] == ["solid", "crashy", "dead"]
    solid, crashy, dead = page.rows
    assert solid.complete and not crashy.complete and not dead.complete
    assert crashy.headline.mean == pytest.approx(0.9) and dead.headline is None
    assert [str(p) for p in crashy.problems] == ["inv (black-box): failed: RuntimeError: boom (seeds 0, 1)"]
    assert page.leader is solid
    site = render_site(store, tmp_path / "site", claims={}).parent
    html = (site / "digits.html").read_text()
    ranking = html.split('id="ranking-table"')[1].split("</table>")[0]
    assert ranking.count('<tr class="incomplete">') == 2
    assert "<li>inv (black-box): failed: RuntimeError: boom (seeds 0, 1)</li>" in ranking
    assert re.findall(r'data-col="defense" data-value="([^"]+)"', ranking) == ["solid", "crashy", "dead"]
    assert "<code>solid</code> 0.200" in (site / "index.html").read_text()


def test_a_missing_cell_makes_a_defense_incomplete_and_a_not_applicable_one_does_not(tmp_path):
    store = _store(tmp_path, [
        *_scored("full", "inv", (0.2, 0.3)), *_scored("full", "attr", (0.4, 0.5)),
        *_scored("gapped", "inv", (0.8, 0.9)), *_scored("gapped", "attr", (0.7,)),  # no attr cell for seed 1
        *_scored("unrun", "inv", (0.9, 0.9)),  # attr never ran against it
        *_scored("sealed", "inv", (0.6, 0.6)),
        *[_outcome(f"sealed/attr/{seed}", "sealed", "attr", seed, "not-applicable") for seed in (0, 1)]])
    rows = {row.spec: row for row in dataset_pages(store.cells(), {}, {})[0].rows}
    assert rows["full"].complete and rows["sealed"].complete
    assert [str(p) for p in rows["gapped"].problems] == [
        "attr (black-box): no cell for seed 1: not run against this defense"]
    assert [str(p) for p in rows["unrun"].problems] == [
        "attr (black-box): no cell for seeds 0, 1: not run against this defense"]
    assert rows["sealed"].rank < rows["full"].rank < rows["gapped"].rank


def test_headline_ignores_threat_models_the_defense_does_not_claim(tmp_path):
    """disguised-nets claims query-free and black-box (its plugin's declaration): a white-box break (a
    leaked key) shows in its white-box column but leaves its headline alone; noise claims white-box,
    so the same break lowers its headline; identity claims nothing and is ranked over every one."""
    claims = installed_claims()
    assert claims["disguised-nets"] == {"query-free", "black-box"} and "white-box" in claims["noise"]
    assert claims["identity"] == frozenset()
    store = _store(tmp_path, [
        *_scored("disguised-nets", "rmle", (0.05, 0.15), "white-box"),
        *_scored("disguised-nets", "inverse-network", (0.7, 0.8), "black-box"),
        *_scored("disguised-nets", "examiner", (0.9, 0.9), "query-free"),
        *_scored("noise", "rmle", (0.3, 0.3), "white-box"),
        *_scored("noise", "inverse-network", (0.5, 0.5), "black-box"),
        *_scored("noise", "examiner", (0.6, 0.6), "query-free"),
        *_scored("identity", "rmle", (0.0, 0.0), "white-box"),
        *_scored("identity", "inverse-network", (0.1, 0.1), "black-box"),
        *_scored("identity", "examiner", (0.2, 0.2), "query-free")])
    page = dataset_pages(store.cells(), {}, claims)[0]
    assert page.threat_models == ["white-box", "black-box", "query-free"]
    assert [row.spec for row in page.rows] == ["disguised-nets", "noise", "identity"]
    disguised, noise, identity = page.rows
    assert disguised.headline.mean == pytest.approx(0.75) and disguised.headline_over == ["black-box", "query-free"]
    assert disguised.threat_stat("white-box").mean == pytest.approx(0.1)
    assert noise.headline.mean == pytest.approx(0.3)
    assert identity.headline.mean == pytest.approx(0.0)
    assert identity.headline_over == ["white-box", "black-box", "query-free"]
    html = render_site(store, tmp_path / "site").with_name("digits.html").read_text()  # the installed claims
    ranking = html.split('id="ranking-table"')[1].split("</table>")[0]
    first = ranking.split("<tbody>")[1].split("</tr>")[0]
    assert "claims black-box, query-free" in first and "over black-box, query-free" in first
    white_box = re.search(r'<td class="num threat unclaimed" data-col="t1" data-value="([^"]+)"', first)
    assert white_box and float(white_box.group(1)) == pytest.approx(0.1) and "not claimed" in first


def test_worst_case_per_threat_model_is_the_per_seed_minimum_then_the_mean(tmp_path):
    """Per seed the lowest score of a threat model's attacks, then the mean: not the lowest mean."""
    store = _store(tmp_path, [*_scored("d", "bb1", (0.6, 0.3)), *_scored("d", "bb2", (0.4, 0.5)),
                              *_scored("d", "qf", (0.9, 0.2), "query-free")])
    row = dataset_pages(store.cells(), {}, {"d": frozenset({"black-box", "query-free"})})[0].rows[0]
    assert row.threat_stat("black-box") == Stat(pytest.approx(0.35), pytest.approx(0.0707, abs=1e-4), 2)
    assert row.threat_stat("query-free").mean == pytest.approx(0.55)
    assert row.threat_stat("white-box") is None
    assert row.headline.mean == pytest.approx(0.3)  # seed 0: min(0.4, 0.9); seed 1: min(0.3, 0.2)


def test_claims_must_be_threat_models_and_privbench_list_shows_them():
    from click.testing import CliRunner

    from privbench.cli import main
    from privbench.core import Defense
    from privbench.errors import PluginError
    with pytest.raises(PluginError, match=r"claims frozenset\(\{'whitebox'\}\); accepted: .*white-box"):
        type("Typo", (Defense,), {"claims": frozenset({"whitebox"})})
    with pytest.raises(PluginError, match="claims 'white-box'"):
        type("Bare", (Defense,), {"claims": "white-box"})
    listing = CliRunner().invoke(main, ["list", "defenses", "--format", "json"])
    defenses = {d["name"]: d for d in json.loads(listing.stdout)["defenses"]}
    assert defenses["disguised-nets"]["claims"] == ["black-box", "query-free"]
    assert defenses["identity"]["access"].endswith("claims nothing (ranked over every threat model)")


def test_page_filenames_are_safe_and_unique():
    names = page_filenames(["digits:target=digit", "digits/target=digit", "index", "../..", "<x>"])
    assert list(names.values()) == ["digits-target-digit.html", "digits-target-digit-2.html", "index-2.html",
                                    "dataset.html", "x.html"]


def test_stat_text_shows_spread_only_when_there_is_one():
    assert Stat.of([0.5]).text() == "0.500"
    assert Stat.of([0.5, 0.7]).text() == "0.600 ± 0.141"
    assert Stat.of([]) is None
    assert Stat.of([120.0, 130.0]).text("cost.fit_s") == "125.0 ± 7.1"
    assert Stat.of([1e-5, 3e-5]).text("attack.p_value") == "2.0e-05 ± 1.4e-05"


def test_an_empty_store_renders_an_index(tmp_path):
    index = render_site(Store(f"sqlite:///{tmp_path / 'empty.db'}"), tmp_path / "site")
    assert "holds no cells yet" in index.read_text()


def test_leaderboard_command(store, tmp_path):
    from click.testing import CliRunner

    from privbench.cli import main
    result = CliRunner().invoke(main, ["leaderboard", "--db", store.url, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "index.html").is_file() and "index.html" in result.output


def test_matrix_renders_the_leaderboard_at_the_end(store, tmp_path):
    from click.testing import CliRunner

    from privbench.cli import main
    result = CliRunner().invoke(main, [
        "matrix", "--db", store.url, "--dataset", "digits:limit=500,target_epochs=5", "--defense", "identity",
        "--attack", "inverse-network:epochs=3", "--seeds", "0", "--quiet", "--leaderboard", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "1 already finished" in result.output  # nothing reran
    assert (tmp_path / "out" / "digits-limit-500-target_epochs-5.html").is_file()


def test_a_defense_that_breaks_the_service_ranks_below_the_utility_budget(tmp_path):
    """A defense that sends zeros leaks nothing (privacy.score 1) and serves nothing (accuracy at
    chance): it must not rank first. Within the default budget (0.05) the honest defenses rank by
    their headline; the zero defense is ranked below them, marked, and the page says why."""
    store = _store(tmp_path, [
        *_scored("zeros", "inv", (1.0, 1.0), accuracy=0.5, drop=0.45),
        *_scored("blur", "inv", (0.6, 0.6), accuracy=0.88, drop=0.06),
        *_scored("noise", "inv", (0.3, 0.3), accuracy=0.91, drop=0.03),
        *_scored("identity", "inv", (0.0, 0.0), accuracy=0.94, drop=0.0)])
    page = dataset_pages(store.cells(), {}, {})[0]
    assert [row.spec for row in page.rows] == ["noise", "identity", "zeros", "blur"]
    assert [row.within_budget for row in page.rows] == [True, True, False, False]
    assert page.leader.spec == "noise" and page.over_budget == 2
    loose = dataset_pages(store.cells(), {}, {}, utility_budget=0.5)[0]
    assert [row.spec for row in loose.rows] == ["zeros", "blur", "noise", "identity"]
    html = render_site(store, tmp_path / "site", claims={}).with_name("digits.html").read_text()
    ranking = html.split('id="ranking-table"')[1].split("</table>")[0]
    assert re.findall(r'data-col="defense" data-value="([^"]+)"', ranking) == ["noise", "identity", "zeros", "blur"]
    assert ranking.count('<tr class="over-budget">') == 2
    assert "utility.drop 0.450 is over the budget of 0.05" in ranking
    assert '<strong id="utility-budget">0.05</strong>' in html and "(2 here)" in html
    index = render_site(store, tmp_path / "site2", claims={}, utility_budget=0.5).with_name("digits.html")
    assert '<strong id="utility-budget">0.5</strong>' in index.read_text()


def test_the_leaderboard_command_takes_a_utility_budget(tmp_path):
    from click.testing import CliRunner

    from privbench.cli import main
    store = _store(tmp_path, [*_scored("zeros", "inv", (1.0,), accuracy=0.5, drop=0.45),
                              *_scored("identity", "inv", (0.0,), accuracy=0.94)])
    url = store.display_url
    result = CliRunner().invoke(main, ["leaderboard", "--db", str(tmp_path / "s.db"), "-o",
                                       str(tmp_path / "site"), "--utility-budget", "0.1"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "site" / "digits.html").read_text()
    assert '<strong id="utility-budget">0.1</strong>' in html and url
    bad = CliRunner().invoke(main, ["leaderboard", "--db", str(tmp_path / "s.db"), "--utility-budget", "2"])
    assert bad.exit_code == 2 and "utility-budget" in bad.output

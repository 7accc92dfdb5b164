"""The leaderboard's Reproductions page: a tiny digits reproduction run into a store, rendered beside its
published numbers exactly as ``privbench reproduce`` checks them; no page and no link without cells."""

from __future__ import annotations

import re
import textwrap

import pytest

from leaderboard import render_site
from privbench.context import RunContext
from privbench.reproduce import load, run
from privbench.store import Store
from privbench.testing import KIT_SECRET

# Two "split points" (identity, then strong input noise) against one attacker; PSNR rows that hold
# whatever the run measures (tolerance 100 dB) and a claim the measurements contradict.
TOY = """\
    name = "toy-split-digits"
    paper = "test-only: He et al. 2019-style PSNR table on digits"
    cost = "seconds"

    [[matrix]]
    datasets = ["digits:limit=500,target_epochs=3"]
    defenses = ["identity", "noise:scale=2.0"]
    attacks = ["inverse-network:epochs=3"]

    [[published]]
    setting = { defense = "identity", attack = "inverse-network" }
    metric = "attack.psnr"
    value = 31.25
    tolerance = 100
    source = "toy table, identity column"

    [[published]]
    setting = { defense = "noise:scale=2.0", attack = "inverse-network" }
    metric = "attack.psnr"
    value = 12.75
    tolerance = 100
    source = "toy table, noise column"

    [[published]]
    setting = { defense = "identity", attack = "inverse-network" }
    metric = "attack.ssim"
    less_than = { defense = "noise:scale=2.0" }
    source = "a wrong claim: the unprotected images leak less than the noisy ones"
    """


@pytest.fixture(scope="module")
def toy_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("repro-config") / "toy-split.toml"
    path.write_text(textwrap.dedent(TOY))
    return path


@pytest.fixture(scope="module")
def site(registry, shared_cache, toy_config, tmp_path_factory):
    """The toy's full plan run into a fresh store, and the site rendered with the toy config."""
    folder = tmp_path_factory.mktemp("repro-site")
    store = Store(f"sqlite:///{folder / 'store.db'}")
    run(load(str(toy_config)), registry, store, RunContext(cache=shared_cache, secret=KIT_SECRET))
    index = render_site(store, folder / "site", claims={}, reproductions=[toy_config])
    return index.parent, store


def stored_means(store: Store, metric: str) -> dict[str, float]:
    """The metric per defense spec, read from the store directly (one seed)."""
    return {cell.defense_spec: next(m.value for m in cell.metrics if m.name == metric)
            for cell in store.cells() if cell.status == "done"}


def test_the_page_shows_published_beside_measured_with_the_command(site, toy_config):
    folder, store = site
    html = (folder / "reproductions.html").read_text()
    assert "toy-split-digits" in html and "He et al. 2019-style PSNR table" in html
    assert f"privbench reproduce {toy_config} --data-dir DIR" in html
    assert "31.25" in html and "12.75" in html  # published
    for mean in stored_means(store, "attack.psnr").values():
        assert f"{mean:.4g} (n=1)" in html  # measured, as privbench reproduce prints it
    assert "toy table, identity column" in html and "2 of 2 planned cells in the store" in html
    assert "authors' code</th>" not in html  # no row has a reference: no column for it


def test_each_row_says_whether_it_holds(site):
    html = (site[0] / "reproductions.html").read_text()
    verdicts = re.findall(r'class="status [a-z-]+ holds"[^>]*>([a-z ]+)<', html)
    assert verdicts == ["yes", "yes", "no"]  # the wrong claim fails, the PSNR rows hold
    assert "2 rows hold · 1 do not" in html


def test_psnr_by_split_figure_has_a_published_and_a_measured_line(site):
    html = (site[0] / "reproductions.html").read_text()
    figure = html[html.index('<figure class="plot-figure split-figure">'):]
    figure = figure[:figure.index("</figure>")]
    published = re.search(r'<polyline points="([^"]+)"[^>]*class="published"', figure).group(1)
    measured = re.search(r'<polyline points="([^"]+)"[^>]*class="measured"', figure).group(1)
    assert len(published.split()) == 2 and len(measured.split()) == 2  # identity, noise
    y = [float(p.split(",")[1]) for p in published.split()]
    assert y[0] < y[1]  # 31.25 dB drawn above 12.75 dB (SVG y grows downwards)
    assert "identity" in figure and "noise:scale=2.0" in figure and "inverse-network" in figure


def test_the_reconstruction_grids_the_cells_saved_are_shown(site):
    folder, _ = site
    html = (folder / "reproductions.html").read_text()
    sources = re.findall(r'<img src="([^"]+)" alt="reconstruction grid', html)
    assert len(sources) == 2
    assert all((folder / source).is_file() for source in sources)


def test_index_links_the_page(site):
    index = (site[0] / "index.html").read_text()
    assert 'href="reproductions.html"' in index and "toy-split-digits" in index


def test_an_empty_store_has_no_page_and_no_link(toy_config, tmp_path):
    index = render_site(Store(f"sqlite:///{tmp_path / 'empty.db'}"), tmp_path / "site", claims={},
                        reproductions=[toy_config])
    assert not (index.parent / "reproductions.html").exists()
    assert "reproductions.html" not in index.read_text()

"""Render the static leaderboard site from a privbench store.

``render_site(store, out_dir)`` writes ``index.html``, one page per dataset spec, ``static/`` (the
stylesheet and the small script, no external resource) and ``img/`` (the PNGs the attacks saved),
and returns the path of ``index.html``. The site opens from disk. Jinja's autoescape is on and no
template marks store data as safe.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape
from sqlalchemy import select

from leaderboard.model import DEFAULT_UTILITY_BUDGET, DatasetPage, dataset_pages, fmt, unit
from leaderboard.plot import page_plots
from leaderboard.reproductions import FILENAME as REPRODUCTIONS_PAGE
from leaderboard.reproductions import ReproductionView, reproduction_views
from privbench.store import Cell, Store, StoredArtifact

STATIC = Path(__file__).parent / "static"
IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}


HEAT_STOPS = ((0.0, (178, 24, 43)), (0.25, (239, 138, 98)), (0.5, (247, 247, 247)), (0.75, (103, 169, 207)),
              (1.0, (33, 102, 172)))  # ColorBrewer RdBu: red = the attack succeeded, blue = private


def heat(score: float) -> tuple[str, str]:
    """(background, text) colours for a privacy.score in [0, 1] on a colour-blind-safe diverging scale."""
    t = max(0.0, min(1.0, score))
    (a, low), (b, high) = next(pair for pair in zip(HEAT_STOPS, HEAT_STOPS[1:], strict=False) if t <= pair[1][0])
    rgb = (round(lo + (hi - lo) * (t - a) / (b - a)) for lo, hi in zip(low, high, strict=True))
    text = "#ffffff" if t < 0.15 or t > 0.85 else "#1b1f24"
    return "#" + "".join(f"{c:02x}" for c in rgb), text


def metrics_of(cell: Cell) -> dict[str, float]:
    return {m.name: m.value for m in cell.metrics}


def breakable(text: str) -> Markup:
    """Escaped text with line-break opportunities after ``:``, ``,`` and ``.`` (long specs in headers)."""
    escaped = escape(text)
    for mark in ":,.":
        escaped = escaped.replace(mark, Markup(mark + "<wbr>"))
    return escaped


def environment() -> Environment:
    """The Jinja environment: templates from the package, autoescape on for every template."""
    env = Environment(loader=PackageLoader("leaderboard", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(unit=unit, fmt=fmt, heat=heat, metrics_of=metrics_of)
    env.filters["breakable"] = breakable
    env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"
    return env


def safe_name(text: str) -> str:
    """A file-name part made of letters, digits, dot, dash and underscore only (no path, no dotfile)."""
    base = re.split(r"[\\/]", text)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base).lstrip(".")[:80] or "artifact"


def write_images(store: Store, cells: list[Cell], folder: Path) -> dict[int, list[tuple[str, str]]]:
    """Write every image artifact as ``img/<cell key>-<name>``; {cell id: [(artifact name, relative path)]}.

    Other media types (HTML, JSON, ...) are not written: a plugin's file never becomes a page of the site."""
    keys = {c.id: c.key for c in cells}
    with store.session() as session:
        listed = session.execute(select(StoredArtifact.cell_id, StoredArtifact.name, StoredArtifact.media_type)
                                 .order_by(StoredArtifact.cell_id, StoredArtifact.id)).all()
    images: dict[int, list[tuple[str, str]]] = {}
    for cell_id, name, media_type in listed:
        if cell_id not in keys or media_type not in IMAGE_TYPES:
            continue
        stem = f"{safe_name(keys[cell_id])}-{safe_name(name).rsplit('.', 1)[0]}"
        filename, number = stem + IMAGE_TYPES[media_type], 2
        while any(path.endswith("/" + filename) for _, path in images.get(cell_id, [])):
            filename, number = f"{stem}-{number}{IMAGE_TYPES[media_type]}", number + 1
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_bytes(store.artifact(cell_id, name).data)
        images.setdefault(cell_id, []).append((name, f"{folder.name}/{filename}"))
    return images


def site_info() -> dict[str, str]:
    """What the footer of every page says about how the site was made."""
    try:
        privbench_version = version("privbench")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        privbench_version = "unknown"
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return {"version": privbench_version, "generated": now}


def installed_claims() -> dict[str, frozenset[str]]:
    """Each installed defense's ``Defense.claims`` by name. The store keeps the defense's name, not
    its class, so the claims are those of the plugin installed where the site is rendered."""
    from privbench.plugins import load_registry
    return {item.name: frozenset(item.cls.claims) for item in load_registry().all("defense")}


def build(store: Store, out: Path, claims: Mapping[str, frozenset[str]] | None = None,
          utility_budget: float = DEFAULT_UTILITY_BUDGET) -> list[DatasetPage]:
    """Read the store, write the images and return the pages with their plots."""
    cells = store.cells()
    runs = {run.id: run for run in store.runs()}
    images = write_images(store, cells, out / "img")
    pages = dataset_pages(cells, runs, installed_claims() if claims is None else claims, utility_budget)
    for page in pages:
        page.images = {c.id: images[c.id] for c in page.cells if c.id in images}
        page.plots = page_plots(page)
    return pages


def render_site(store: Store, out_dir: str | Path, claims: Mapping[str, frozenset[str]] | None = None,
                reproductions: Iterable[str | Path] = (),
                utility_budget: float = DEFAULT_UTILITY_BUDGET) -> Path:
    """Render the leaderboard of everything in ``store`` into ``out_dir``; return its ``index.html``.

    ``claims`` maps a defense name to the threat models it claims; by default each installed
    defense's ``Defense.claims``. ``reproductions`` adds reproduction config paths to the shipped ones
    for ``reproductions.html`` (written only when one of them has a cell in the store).
    ``utility_budget`` is the utility.drop past which a defense ranks below the others. Files are
    overwritten in place; nothing else in ``out_dir`` is removed but a stale ``reproductions.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(STATIC, out / "static", dirs_exist_ok=True)
    pages = build(store, out, claims, utility_budget)
    env, site = environment(), site_info()
    for page in pages:
        html = env.get_template("dataset.html").render(page=page, pages=pages, site=site)
        (out / page.filename).write_text(html, encoding="utf-8")
    views = write_reproductions(store, out, env, pages, site, reproductions)
    index = out / "index.html"
    index.write_text(env.get_template("index.html").render(pages=pages, site=site, reproductions=views),
                     encoding="utf-8")
    return index


def write_reproductions(store: Store, out: Path, env: Environment, pages: list[DatasetPage],
                        site: dict[str, str], extra: Iterable[str | Path]) -> list[ReproductionView]:
    """Write ``reproductions.html`` when some reproduction has a cell in the store (else remove a stale
    one) and return its reproductions."""
    from privbench.plugins import load_registry
    images = {cell_id: found for page in pages for cell_id, found in page.images.items()}
    views = reproduction_views(store.cells(), images, load_registry(), extra)
    target = out / REPRODUCTIONS_PAGE
    if views:
        target.write_text(env.get_template("reproductions.html").render(views=views, pages=pages, site=site),
                          encoding="utf-8")
    elif target.exists():
        target.unlink()
    return views

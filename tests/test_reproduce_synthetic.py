"""``privbench reproduce --quick`` of the configs whose data is not on this machine, on synthetic files.

he2019-cifar10, disguised-nets-cifar10-lfw, privacy-finetune-celeba and dapter-lambda's CIFAR-10
part need CIFAR-10, LFW and CelebA. Each runs here on a small synthetic file set in torchvision's
layout (tests/synthetic_files.py), from a copy of the shipped config whose [quick] overrides are
smaller still (one epoch, a few rMLE iterations, every synthetic image); its matrix and published
rows are the shipped ones. The checks are about the code path, not the papers' figures: the
command ends with exit 0 or 1 (never 2 or a crash), every planned cell is stored done or
not-applicable, the table names each checked row's metric and source, and the exit status is 1
exactly when the table says NO somewhere. torchvision's MD5 checks are replaced by file-exists
checks (``md5_free``), so the command runs in process through click's CliRunner.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchvision.datasets.celeba
import torchvision.datasets.cifar
from click.testing import CliRunner, Result
from synthetic_files import write_celeba, write_cifar, write_lfw
from test_torchvision_datasets import md5_free

from privbench.cli import main
from privbench.context import RunContext
from privbench.reproduce import Selection, find, load, plan_cells
from privbench.store import FINISHED, Store
from privbench.torchvision_datasets import CelebA, Cifar10, LfwPeople
from privbench.training import one_torch_thread

# [quick] keys made smaller still: every synthetic image, one epoch, a few rMLE iterations.
QUICKER = {"dataset": {"target_epochs": 1}, "defense": {"epochs": 1},
           "attack": {"epochs": 1, "iterations": 5}}


@dataclass(frozen=True)
class Case:
    name: str  # the shipped reproduction
    writers: tuple  # functions (data dir) -> number of images written, one per dataset
    datasets: tuple[str, ...] = ()  # --dataset filter


# Small enough that each run takes seconds on 2 CPU cores (ResNet-18 dominates); 6 images per
# CIFAR-10 class, the 12 LFW persons lfw-people keeps (of 13 written), CelebA's attributes at random.
def cifar(root: Path) -> int:
    return write_cifar(root, per_batch=10)


CASES = {
    "he2019-cifar10": Case("he2019-cifar10", (cifar,)),
    "disguised-nets-cifar10-lfw": Case(
        "disguised-nets-cifar10-lfw", (cifar, lambda root: write_lfw(root, persons=13, images=6))),
    "privacy-finetune-celeba": Case("privacy-finetune-celeba",
                                    (lambda root: write_celeba(root, count=60),)),
    "dapter-lambda": Case("dapter-lambda", (cifar,), ("cifar10",)),
}


# -- the synthetic files: read by privbench's loaders, with their labels in the pixels -------------------

def nearest_mean_accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy on a random half of the images of the class means of the other half."""
    pixels = images.flatten(1)
    first = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0)) < len(pixels) // 2
    classes = labels[first].unique()
    means = torch.stack([pixels[first & (labels == c)].mean(0) for c in classes])
    guessed = classes[torch.cdist(pixels[~first], means).argmin(1)]
    return (guessed == labels[~first]).float().mean().item()


@pytest.mark.parametrize("dataset, writer, tasks", [
    (Cifar10.from_params({}), cifar, ("class",)),
    (LfwPeople.from_params({}), CASES["disguised-nets-cifar10-lfw"].writers[1], ("person",)),
    (CelebA.from_params({"image_size": "32"}), CASES["privacy-finetune-celeba"].writers[0],
     ("male", "smiling")),
], ids=["cifar10", "lfw-people", "celeba"])
def test_synthetic_files_load_and_their_labels_are_learnable(tmp_path, monkeypatch, dataset, writer,
                                                             tasks):
    md5_free(monkeypatch, torchvision.datasets.cifar)
    md5_free(monkeypatch, torchvision.datasets.celeba)
    written = writer(tmp_path)
    loaded = dataset.load(RunContext(data_dir=tmp_path))
    assert loaded.images.shape[1:] == (3, 32, 32)
    assert len(loaded) == written or dataset.name == "lfw-people"  # lfw keeps 12 of 13 persons
    for task in tasks:
        labels = loaded.labels[task]
        chance = 1 / len(labels.unique())
        assert nearest_mean_accuracy(loaded.images, labels) > (1 + chance) / 2, task  # halfway up


# -- a copy of the shipped config with smaller [quick] overrides ----------------------------------------

def toml_value(value) -> str:
    """A TOML scalar (the [quick] tables hold only numbers, booleans and strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a basic TOML string: the same escapes as JSON


def smaller(table: dict, kind: str, images: int) -> dict:
    """A [quick] table with its epoch / iteration keys from QUICKER and its limit at ``images``."""
    shrunk = {}
    for key, value in table.items():
        if isinstance(value, dict):
            shrunk[key] = smaller(value, kind, images)
        elif key == "limit":
            shrunk[key] = images
        else:
            shrunk[key] = QUICKER[kind].get(key, value)
    return shrunk


def quick_toml(quick: dict) -> str:
    """[quick.KIND] tables, then [quick.KIND.PLUGIN] ones."""
    lines = []
    for kind, table in quick.items():
        lines.append(f"[quick.{kind}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
        for plugin, own in table.items():
            if isinstance(own, dict):
                lines.append(f'[quick.{kind}."{plugin}"]')
                lines += [f"{k} = {toml_value(v)}" for k, v in own.items()]
    return "\n".join(lines) + "\n"


def without_quick(text: str) -> str:
    """The config text less its [quick...] tables (a header up to the next header)."""
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            inside = re.match(r"\[quick[.\]]", line) is not None
        if not inside:
            kept.append(line)
    return "".join(kept)


def quicker_copy(name: str, folder: Path, images: int) -> Path:
    """The shipped config with smaller [quick] overrides, everything else as shipped."""
    text = find(name).read_text()
    shipped = tomllib.loads(text)
    quick = {kind: smaller(table, kind, images) for kind, table in shipped["quick"].items()}
    copy = folder / f"{name}.toml"
    copy.write_text(without_quick(text) + "\n" + quick_toml(quick))
    written = tomllib.loads(copy.read_text())
    assert written["quick"] == quick
    assert {k: v for k, v in written.items() if k != "quick"} == \
        {k: v for k, v in shipped.items() if k != "quick"}
    return copy


def test_the_copy_keeps_the_config_and_shrinks_only_quick(tmp_path):
    copy = quicker_copy("dapter-lambda", tmp_path, 120)
    quick = tomllib.loads(copy.read_text())["quick"]
    assert quick["dataset"] == {"digits": {"target_epochs": 1},
                                "cifar10": {"limit": 120, "target_epochs": 1}}
    assert quick["defense"] == {"epochs": 1} and quick["attack"] == {"epochs": 1}
    copied, shipped = load(str(copy)), load("dapter-lambda")
    assert copied.rows == shipped.rows and copied.matrices == shipped.matrices


# -- one run per config ---------------------------------------------------------------------------------

@dataclass
class Run:
    case: Case
    db: Path
    table: Result
    as_json: Result
    planned: list
    seconds: float


def invoke(*args) -> Result:
    # wide enough that every table row is one line
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "2000"})


@pytest.fixture(scope="module", params=sorted(CASES))
def run(request, tmp_path_factory, registry) -> Run:
    """The config's --quick on synthetic files (table), then again as JSON on the same store."""
    case = CASES[request.param]
    folder = tmp_path_factory.mktemp(case.name)
    data = folder / "data"
    images = max(write(data) for write in case.writers)
    copy = quicker_copy(case.name, folder, images)
    db = folder / "x.db"
    common = ["--quick", "--data-dir", data, "--db", db, "--cache-dir", folder / "cache", "--quiet",
              *[arg for name in case.datasets for arg in ("--dataset", name)]]
    with pytest.MonkeyPatch.context() as patch, one_torch_thread():
        patch.setenv("PRIVBENCH_HOME", str(folder / "home"))
        md5_free(patch, torchvision.datasets.cifar)
        md5_free(patch, torchvision.datasets.celeba)
        start = time.perf_counter()
        table = invoke("reproduce", copy, *common)
        seconds = time.perf_counter() - start
        as_json = invoke("reproduce", copy, *common, "--format", "json")
    shutil.rmtree(folder / "cache", ignore_errors=True)  # ResNet-18 weights: hundreds of MB
    planned = plan_cells(load(str(copy)), registry, Selection(quick=True, datasets=case.datasets))
    return Run(case, db, table, as_json, planned, seconds)


def ended_cleanly(result: Result) -> None:
    """Exit 0 or 1 through SystemExit, not 2 (bad input, missing data) and not an exception."""
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not crashed and result.exit_code in (0, 1), (result.exit_code, result.output)


def table_rows(output: str) -> list[dict[str, str]]:
    """Each body line of the rich table by column name (setting, metric, published, authors' code
    when a row has one, check, measured..., holds, source), the names read from its header line."""
    header = next(line for line in output.splitlines() if line.startswith("┃"))
    names = [cell.strip() for cell in header.split("┃")[1:-1]]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines()
            if line.startswith("│")]
    return [dict(zip(names, row, strict=True)) for row in rows if len(row) == len(names)]


def test_quick_run_ends_with_0_or_1_not_bad_input_or_a_crash(run):
    ended_cleanly(run.table)
    ended_cleanly(run.as_json)
    print(f"{run.case.name}: exit {run.table.exit_code} in {run.seconds:.1f} s")


def test_every_planned_cell_is_stored_done_or_not_applicable(run):
    ended_cleanly(run.table)
    assert run.planned
    stored = {cell.key: cell for cell in Store(str(run.db)).cells({c.key for c in run.planned})}
    missing = [c.key for c in run.planned if c.key not in stored]
    assert not missing, f"{len(missing)} planned cells not stored"
    unfinished = [f"{c.dataset_spec} · {c.defense_spec} · {c.attack_spec}: {c.status}: {c.reason}"
                  for c in stored.values() if c.status not in FINISHED]
    assert not unfinished, "\n".join(unfinished)
    assert any(c.status == "done" for c in stored.values())
    assert "failed cell" not in run.table.output


def test_table_names_each_checked_row_and_the_exit_status_agrees(run):
    ended_cleanly(run.as_json)
    report = json.loads(run.as_json.stdout)
    checked = [row for row in report["rows"] if row["holds"] is not None]
    assert checked, "--quick checked no row"
    assert f"{run.case.name}: published vs measured (--quick" in run.table.output
    lines = table_rows(run.table.output)
    for row in checked:
        shown = [line for line in lines if (line["setting"], line["metric"], line["source"])
                 == (row["setting"], row["metric"], row["source"])]
        assert len(shown) == 1, (row["setting"], row["metric"], row["source"], run.table.output)
        assert shown[0]["holds"] == ("yes" if row["holds"] else "NO")
    says_no = any(line["holds"] == "NO" for line in lines)
    assert run.table.exit_code == (1 if says_no else 0), run.table.output
    holding = sum(row["holds"] is True for row in checked)
    assert f"{holding} of {len(checked)} checked rows hold" in run.table.output


def test_json_rerun_resumes_from_the_store_and_agrees_with_the_table(run):
    ended_cleanly(run.as_json)
    assert run.as_json.exit_code == run.table.exit_code
    assert f"; 0 cells run, {len(run.planned)} already finished" in run.as_json.stderr
    report = json.loads(run.as_json.stdout)
    assert report["reproduction"] == run.case.name and report["quick"] is True
    assert report["holds"] is (run.as_json.exit_code == 0)

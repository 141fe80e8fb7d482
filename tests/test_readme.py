"""Every shell command in README.md is a test: it runs, shortened, or is checked short of running.

Extraction (tests/readme_commands.py): each line of a ```bash block, and each inline code span
whose first word is a program (``make``, ``python``, ``.venv/bin/...``, ``wandb``, after an
optional ``time``) followed by arguments; in docs/*.md only blocks after ``<!-- runnable -->``.

How each command is checked:
- ``python -m gan_lab.train ...`` (``-m`` sweeps too): composed in-process first (a removed
  option or key fails here), then run in a subprocess with its own overrides plus
  ``readme_commands.SHORT_TRAIN`` (4 iterations, metrics, grids and checkpoints every 2) and its
  run/sweep dir under tmp; an Optuna sweep gets 2 trials.
- ``python -m gan_lab.evaluate | report | metrics.sanity``: run as written (sanity on 1,000
  images); ``make TARGET ...``: the lines ``make -n`` prints for it (without ``setup``), each run
  as above, so ``make train ARGS=...`` and ``make sweep`` run their own Makefile lines.
- Placeholders come from the README's first single training run and first sweep (each run once):
  ``<same overrides>``, ``<run dir>``, ``PATH`` (its last.ckpt), ``<same sweep overrides>``,
  ``<same multirun dir>``, ``multirun/<date_time>``; ``...`` is the rest of a sweep and ``N`` a
  small count. A ``ckpt_path=last`` command gets a copy rewound to its first checkpoint, so it
  resumes mid-run.
- Any other untagged command fails: a new README command is never skipped silently.

Tags, ``<!-- needs: KIND -->`` on its own line right before a block, or
``<!-- needs: KIND: SELECTOR; ... -->`` for only the commands or ``[optional]`` parts of that
block containing a selector, mark commands a CPU-only offline test machine cannot run:

| KIND | means | checked instead |
|---|---|---|
| ``gpu`` | CUDA GPUs (``trainer=gpu``, ``trainer=ddp``) | training: composed |
| ``slurm`` | a SLURM cluster (``hydra/launcher=slurm``) | training: composed |
| ``network`` | downloads or an account (Inception weights, wandb sync) | composed / tool exists |
| ``long`` | minutes to hours, may rewrite committed results (benchmarks) | module / target exists |
| ``checkout`` | installs, tests, lints or formats the checkout itself | target, test ids exist |
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from tests.readme_commands import (
    CONF_DIR,
    NEEDS,
    Command,
    Runner,
    extract,
    make_recipe,
    readme_commands,
)

COMMANDS = readme_commands()

# A command may first run the README command whose run dir it fills in (a sweep, ~20 s).
pytestmark = pytest.mark.timeout(300)

# Runnable commands kept out of the fast tier: (text the command contains, why).
SLOW = [
    ("hydra/launcher=local_parallel", "joblib workers each import torch (~20 s)"),
    ("hparams_search=", "Optuna sweep (~15 s); tests/test_optuna_study.py runs one, fast tier"),
    ("make sweep", "6 jobs on joblib + report (~25 s)"),
    ("experiment=paper_mlp", "k=3 on digits (~20 s); composed in the fast tier"),
    ("experiment=digits_dcgan", "a second DCGAN preset (~8 s; make train runs one); composed"),
    ("gan_lab.metrics.sanity", "classifier features of 3,000 Fashion-MNIST images (~20 s)"),
]


def _slow(command: Command) -> str | None:
    if command.needs:
        return None
    return next((why for text, why in SLOW if text in command.text), None)


def _param(command: Command):
    marks = [pytest.mark.slow] if _slow(command) else []
    name = f"{command.where[0]} {command.text}"
    return pytest.param(command, id=name[:90], marks=marks)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(tmp_path_factory.mktemp("readme"), COMMANDS)


@pytest.mark.parametrize("command", [_param(c) for c in COMMANDS])
def test_readme_command(command: Command, runner: Runner) -> None:
    runner.check(command)


def test_every_readme_command_has_a_check(runner: Runner) -> None:
    """Classification alone, in the fast tier, also for the commands marked slow: each runnable
    command (a make target's recipe lines included) is one the runner knows how to run, and
    each slow one composes."""
    from tests.readme_commands import RUNNABLE_MODULES

    assert len(COMMANDS) >= 20  # the extraction found README's commands at all
    for command in COMMANDS:
        if command.needs:
            continue
        lines = [command.text]
        if command.words[0] == "make":
            recipe = make_recipe(shlex.split(" ".join(command.words))[1:])  # after `time`
            lines = [line for line in recipe if not line.startswith("echo ")]
        for line in lines:
            module = Command(line, command.where).module
            assert module in RUNNABLE_MODULES, f"{command.where}: cannot run {line!r}"
            if _slow(command) and Command(line, command.where).module == "gan_lab.train":
                runner.check_tagged(Command(line, command.where, ("slow",)))


def test_removing_an_option_a_readme_command_uses_fails(tmp_path: Path, runner: Runner) -> None:
    """A README line selecting ``loss=hinge`` fails in the harness once
    gan_lab/conf/loss/hinge.yaml is gone (before any subprocess starts), and so does a renamed
    key."""
    command = next(c for c in COMMANDS if not c.needs and "loss=hinge" in c.text.split())
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "loss" / "hinge.yaml").unlink()
    crippled = Runner(tmp_path / "runs", COMMANDS, conf_dir=conf)
    with pytest.raises(pytest.fail.Exception, match="loss/hinge"):
        crippled.check(command)
    assert not any(p.is_file() for p in (tmp_path / "runs").rglob("*"))  # nothing ran
    # The same line against the real conf composes; a misspelled key does not.
    runner.compose(command.words[3:])
    renamed = Command(command.text.replace("loss=hinge", "loss.hinge_margin=1"), command.where)
    with pytest.raises(pytest.fail.Exception, match="hinge_margin"):
        Runner(tmp_path / "runs2", COMMANDS).check(renamed)


def test_an_unknown_untagged_command_fails(tmp_path: Path) -> None:
    runner = Runner(tmp_path, COMMANDS)
    for text in ("python -m gan_lab.nosuch x=1", "wandb sync somewhere"):
        with pytest.raises(pytest.fail.Exception, match="tag it in README.md"):
            runner.check(Command(text, ("README.md:1",)))


EXAMPLE = """\
# Title
Run `python -m gan_lab.train loss=hinge` or `make train`; the option `wandb` is no command.

<!-- needs: gpu: trainer=gpu -->
```bash
python -m gan_lab.train \\
    seed=1   # a comment
python -m gan_lab.train trainer=gpu
```

<!-- needs: network: eval=inception -->
| a | b |
|---|---|
| x | `python -m gan_lab.evaluate ckpt=PATH [save_samples=N] [eval=inception]` |

```
make not-a-shell-block
```
"""


def test_extraction_rule(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(EXAMPLE)
    found = [(c.text, c.needs, c.where[0].rsplit(":", 1)[1]) for c in extract(doc)]
    assert found == [
        ("python -m gan_lab.train loss=hinge", (), "2"),
        ("make train", (), "2"),
        ("python -m gan_lab.train seed=1", (), "6"),
        ("python -m gan_lab.train trainer=gpu", ("gpu",), "8"),
        ("python -m gan_lab.evaluate ckpt=PATH save_samples=N", (), "14"),
        ("python -m gan_lab.evaluate ckpt=PATH eval=inception", ("network",), "14"),
    ]
    assert extract(doc, runnable_only=True) == []
    doc.write_text("<!-- runnable -->\n`make sweep`\n\n`make train`\n")
    assert [c.text for c in extract(doc, runnable_only=True)] == ["make sweep"]
    for bad, message in [
        ("<!-- needs: gpu: trainer=ddp -->\n`make train`\n", "matches no command"),
        ("<!-- needs: quantum -->\n`make train`\n", "unknown tag"),
        ("<!-- needs: gpu -->\nno command here\n", "no command"),
        ("`make train`\n<!-- needs: gpu -->\n", "tags nothing"),
    ]:
        doc.write_text(bad)
        with pytest.raises(ValueError, match=message):
            extract(doc)
    assert set(NEEDS) == {"gpu", "slurm", "network", "long", "checkout"}

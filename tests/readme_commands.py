"""The shell commands of README.md (and of docs/*.md blocks marked runnable), and how a test runs
each one: shortened for real, or checked without running where the machine cannot run it.

Extraction (see ``extract``):
- every line of a fenced block whose language is bash/sh/shell/console (``\\`` continuations
  joined, ``# comments`` dropped);
- every inline code span, in prose, lists and tables, whose first word is a program:
  ``make``, ``python``/``python3``, ``.venv/bin/<tool>``, ``wandb``, optionally after ``time``,
  followed by an argument (a bare ``wandb`` names the logger option);
- in docs/*.md only the block right after a ``<!-- runnable -->`` line.
A span like ``[save_samples=N]`` (``[`` at the start of a word) is an optional part: the command
runs with all its optional parts, except those a tag names (each of those is checked as its own
variant). Commands equal after this are run once.

Tags (``<!-- needs: KIND -->`` or ``<!-- needs: KIND: SELECTOR; SELECTOR -->``, each on its own
line right before a fenced block, paragraph, list or table) apply to every command of that
block, or only to those (or the optional parts) that contain a selector as whole words. A tag
that matches nothing fails, so tags cannot go stale. KIND is one of ``NEEDS``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from gan_lab.config import CONF_DIR  # importing it registers the run schema
from tests import processes

ROOT = Path(__file__).resolve().parents[1]

# The tag vocabulary: what a command needs that a CPU-only, offline test machine lacks.
NEEDS = {
    "gpu": "CUDA GPU(s): trainer=gpu, trainer=ddp",
    "slurm": "a SLURM cluster (hydra/launcher=slurm)",
    "network": "downloads or an online account: Inception weights, MNIST/CIFAR, wandb sync",
    "long": "a measurement or regeneration run (minutes to hours; may rewrite committed results)",
    "checkout": "acts on the checkout itself: install it, run its test suite, lint or format it",
}

COMMAND = re.compile(r"^(?:time\s+)?(?:make|python3?|\.venv/bin/\S+|wandb)\s+\S")
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
TAG = re.compile(r"^<!--\s*needs:\s*([\w-]+)\s*(?::\s*(.*?))?\s*-->\s*$")
ANY_TAG = re.compile(r"^<!--\s*needs\b")
RUNNABLE = re.compile(r"^<!--\s*runnable\s*-->\s*$")
OPTIONAL = re.compile(r"(?<=\s)\[([^\[\]]+)\]")
SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")


@dataclass(frozen=True)
class Command:
    """One command as written (whitespace normalised), where it is, and what it needs."""

    text: str
    where: tuple[str, ...]
    needs: tuple[str, ...] = ()

    @property
    def words(self) -> list[str]:
        words = self.text.split()
        return words[1:] if words[:1] == ["time"] else words

    @property
    def module(self) -> str | None:
        """``X`` of ``python -m X ...`` (also ``.venv/bin/python -m X``), else None."""
        words = self.words
        if len(words) >= 3 and is_python(words[0]) and words[1] == "-m":
            return words[2]
        return None


def is_python(word: str) -> bool:
    return word in ("python", "python3") or re.fullmatch(r"\.venv/bin/python3?", word) is not None


@dataclass
class _Block:
    line: int  # 1-based line of its first line
    lines: list[str]
    fence: str | None = None  # the fence's language; None for prose, lists and tables
    tags: list[tuple[str, list[str] | None, int]] = field(default_factory=list)
    runnable: bool = False


def _blocks(lines: list[str], where: str) -> list[_Block]:
    """Fenced blocks and runs of non-blank lines, each with the tags written right before it."""
    blocks: list[_Block] = []
    tags: list[tuple[str, list[str] | None, int]] = []
    runnable = False
    current: _Block | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        tag = TAG.match(stripped)
        if tag or RUNNABLE.match(stripped) or ANY_TAG.match(stripped):
            current = None
            if tag is None and not RUNNABLE.match(stripped):
                raise ValueError(f"{where}:{i + 1}: malformed tag {stripped!r}")
            if tag:
                kind, selectors = tag.group(1), tag.group(2)
                if kind not in NEEDS:
                    raise ValueError(f"{where}:{i + 1}: unknown tag 'needs: {kind}' ({NEEDS})")
                parts = [s.strip() for s in selectors.split(";")] if selectors else None
                tags.append((kind, parts, i + 1))
            else:
                runnable = True
        elif stripped.startswith("```"):
            fence, body, start = stripped[3:].strip(), [], i + 1
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append(_Block(start, body, fence or "", tags, runnable))
            tags, runnable, current = [], False, None
        elif not stripped or stripped.startswith("#"):
            current = None
        elif current is None:
            current = _Block(i + 1, [line], None, tags, runnable)
            blocks.append(current)
            tags, runnable = [], False
        else:
            current.lines.append(line)
        i += 1
    if tags:
        raise ValueError(f"{where}:{tags[0][2]}: tag at the end of the file tags nothing")
    return blocks


def _strip_comment(line: str) -> str:
    """The line without a shell ``# comment`` (a ``#`` after whitespace, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _raw_commands(block: _Block) -> list[tuple[str, int]]:
    """(command text, line) of every command of a block."""
    found = []
    if block.fence is not None:
        if block.fence.split()[0:1] and block.fence.split()[0] in SHELL_LANGUAGES:
            joined, start = "", None
            for offset, line in enumerate(block.lines):
                start = block.line + 1 + offset if start is None else start
                if line.rstrip().endswith("\\"):
                    joined += line.rstrip()[:-1] + " "
                    continue
                text = " ".join(_strip_comment(joined + line).split())
                if text:
                    found.append((text, start))
                joined, start = "", None
        return found
    text = "\n".join(block.lines)
    for match in SPAN.finditer(text):
        span = " ".join(match.group(1).split())
        if COMMAND.match(span):
            found.append((span, block.line + text[: match.start()].count("\n")))
    return found


def _matches(text: str, selector: str) -> bool:
    return f" {selector} " in f" {text} "


def _expand(text: str, optional_tags: dict[str, list[str]]) -> list[tuple[str, tuple[str, ...]]]:
    """The command with its untagged optional parts, and one variant per tagged part."""
    groups = OPTIONAL.findall(text)
    if not groups:
        return [(text, ())]
    tagged = {
        g: tuple(k for k, sels in optional_tags.items() if any(_matches(g, s) for s in sels))
        for g in groups
    }
    main = OPTIONAL.sub(lambda m: "" if tagged[m.group(1)] else m.group(1), text)
    variants = [(" ".join(main.split()), ())]
    for group, needs in tagged.items():
        if needs:
            only = OPTIONAL.sub(lambda m, g=group: m.group(1) if m.group(1) == g else "", text)
            variants.append((" ".join(only.split()), needs))
    return variants


def extract(path: Path, runnable_only: bool = False) -> list[Command]:
    """Every command of a Markdown file, tagged; see the module docstring for the rule."""
    where = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    commands: list[Command] = []
    for block in _blocks(path.read_text().splitlines(), where):
        if runnable_only and not block.runnable:
            continue
        raw = _raw_commands(block)
        if block.tags and not raw:
            raise ValueError(f"{where}:{block.tags[0][2]}: tag before a block with no command")
        whole = tuple(kind for kind, selectors, _ in block.tags if selectors is None)
        scoped: dict[str, list[str]] = {}
        for kind, selectors, line in block.tags:
            for selector in selectors or []:
                if not any(_matches(OPTIONAL.sub(r"\1", t), selector) for t, _ in raw):
                    raise ValueError(f"{where}:{line}: '{selector}' matches no command below")
                scoped.setdefault(kind, []).append(selector)
        for text, line in raw:
            for variant, part_needs in _expand(text, scoped):
                base = OPTIONAL.sub("", variant)
                needs = whole + part_needs
                needs += tuple(
                    k for k, sels in scoped.items() if any(_matches(base, s) for s in sels)
                )
                commands.append(Command(variant, (f"{where}:{line}",), tuple(dict.fromkeys(needs))))
    return commands


def readme_commands(root: Path = ROOT) -> list[Command]:
    """README.md's commands and those of docs/*.md blocks marked runnable, equal ones merged."""
    found = extract(root / "README.md")
    for doc in sorted((root / "docs").glob("*.md")):
        found += extract(doc, runnable_only=True)
    merged: dict[tuple[str, tuple[str, ...]], Command] = {}
    for command in found:
        key = (command.text, command.needs)
        if key in merged:
            command = replace(merged[key], where=merged[key].where + command.where)
        merged[key] = command
    return list(merged.values())


# ---- make: a target is what its recipe runs -------------------------------------------------


def make_recipe(args: list[str], timeout: float = 30) -> list[str]:
    """The command lines ``make ARGS`` would run (``make -n``), without the ``setup`` target
    (the venv exists wherever the tests run; a test must never reinstall it)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", "setup", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"make -n {shlex.join(args)} failed:\n{result.stderr[-2000:]}")
    lines = result.stdout.replace("\\\n", " ").splitlines()
    # "make: Nothing to be done for 'setup'." and the like are make's own words, no recipe.
    return [
        " ".join(line.split()) for line in lines if line.strip() and not line.startswith("make")
    ]


# ---- checks for tagged commands: everything short of running them --------------------------


def static_check(command: Command) -> None:
    """What a test can check of a command it does not run: the make target and its recipe, the
    module, the executable, the test node ids. A command none of these covers fails."""
    words = command.words
    module = command.module
    if words[0] == "make":
        for line in make_recipe(shlex.split(" ".join(words[1:]))):
            if not line.startswith("echo "):
                static_check(Command(line, command.where, command.needs))
    elif module is not None:
        assert importlib.util.find_spec(module) is not None, f"no module {module}"
        if module == "pytest":
            check_test_ids(shlex.split(command.text.split(" pytest", 1)[1]))
    elif words[0].startswith(".venv/bin/") or words[0] == "wandb":
        name = words[0].rsplit("/", 1)[-1]
        assert (ROOT / ".venv" / "bin" / name).exists() or _venv_bin(name).exists(), words[0]
    else:
        raise AssertionError(f"{command.where}: no check for {command.text!r}")


def _venv_bin(name: str) -> Path:
    return Path(sys.executable).parent / name


def check_test_ids(args: list[str]) -> None:
    """The test files and ``::name`` parts a pytest command line names exist; a one-word
    ``-k`` selects at least one test of them."""
    files = []
    for arg in args:
        path, *names = arg.split("::")
        if path.startswith("tests/"):
            file = ROOT / path
            assert file.is_file(), f"{arg}: no file {path}"
            files.append(file)
            for name in names:
                assert re.search(rf"\b(def|class) {re.escape(name)}\b", file.read_text()), arg
    if "-k" in args and re.fullmatch(r"\w+", keyword := args[args.index("-k") + 1]):
        names = re.findall(r"def (test_\w+)", "".join(f.read_text() for f in files))
        assert any(keyword in name for name in names), f"-k {keyword} selects no test"


# ---- running: the command's own options, a budget of a few iterations, under the test's dir --

# Appended to every training command (Hydra takes the last value of a key): 4 iterations, two
# checkpoints (a ckpt_path=last command resumes from the first), metrics at the last iteration
# with the eval group's own sample counts.
SHORT_TRAIN = [
    "train.iterations=4",
    "train.log_every=2",
    "train.sample_every=2",
    "train.checkpoint_every=2",
    "eval.every_n_iterations=4",  # metrics once, at the end: image metrics cost ~10 s each
    "trainer.enable_progress_bar=false",
]
# Appended where the composed config has a trial budget (Optuna).
SHORT_TRIALS = "hydra.sweeper.n_trials=2"
# Other runnable modules, and what shortens them (argparse takes the last value of a flag).
RUNNABLE_MODULES = {
    "gan_lab.train": [],
    "gan_lab.evaluate": [],
    "gan_lab.report": [],
    "gan_lab.metrics.sanity": ["--n", "1000"],
}
# What README placeholders stand for beyond run dirs: `...` after a launcher is the rest of a
# sweep (two jobs, as for "2 jobs at a time"); N a small count.
SWEEP_REST = "experiment=ring_mlp seed=0,1"
SMALL_N = "64"
PLACEHOLDER = re.compile(r"multirun/<[^<>]+>|<[^<>]+>|(?<==)(?:PATH|N|FILE)\b|(?<!\S)\.\.\.(?!\S)")
LITERAL_DIR = re.compile(r"hydra\.(run|sweep)\.dir=(?!<)")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SUBPROCESS_TIMEOUT = 150


@dataclass
class Run:
    """One README command as it ran: its own overrides and the run or sweep dir it wrote."""

    args: list[str]
    out: Path
    output: str


class Runner:
    """Checks README commands: untagged ones run shortened, each once, in folders under
    ``base``; tagged ones are composed (training) or checked statically."""

    def __init__(self, base: Path, commands: list[Command], conf_dir: Path = CONF_DIR) -> None:
        self.base = base
        self.commands = commands
        self.conf_dir = conf_dir
        self.runs: dict[str, list[Run]] = {}
        self.lines: dict[str, Run] = {}
        self._dirs = 0

    # -- entry point

    def check(self, command: Command) -> list[Run]:
        """Run the command (or check it, if tagged); fails the test with the reason."""
        if command.needs:
            self.check_tagged(command)
            return []
        if command.text not in self.runs:
            self.runs[command.text] = self._run(command)
        return self.runs[command.text]

    def check_tagged(self, command: Command) -> None:
        """A training command is composed (its groups, keys and values checked by Hydra); an
        evaluate command's group switches are composed; anything else gets ``static_check``."""
        text = self.fill(command.text, dry=True)
        words = shlex.split(text)
        words = words[1:] if words[0] == "time" else words
        module = command.module
        try:
            if module == "gan_lab.train":
                self.compose([w for w in words[3:] if not w.startswith("-")])
            elif module == "gan_lab.evaluate":
                groups = [w for w in words[3:] if (self.conf_dir / _group_of(w)).is_dir()]
                self.compose(groups)
            else:
                static_check(command)
        except Exception as error:  # noqa: BLE001 - any failure is the command's
            pytest.fail(f"{command.where[0]}: {command.text}\n{type(error).__name__}: {error}")

    # -- composition, as `python -m gan_lab.train` would (first value of each sweep)

    def compose(self, overrides: list[str]) -> DictConfig:
        first = []
        for override in OverridesParser.create().parse_overrides(overrides):
            if not override.is_sweep_override():
                first.append(override.input_line)
            elif override.is_discrete_sweep():
                value = next(iter(override.sweep_string_iterator()))
                first.append(f"{override.get_key_element()}={value}")
        with initialize_config_dir(config_dir=str(self.conf_dir), version_base="1.3"):
            return compose("train", overrides=first, return_hydra_config=True)

    # -- placeholders: filled from the README's own first single run and first sweep

    def source(self, multirun: bool) -> Command:
        for command in self.commands:
            if (
                not command.needs
                and command.module == "gan_lab.train"
                and not PLACEHOLDER.search(command.text)
                and bool({"-m", "--multirun"} & set(command.words[3:])) == multirun
            ):
                return command
        kind = "sweep" if multirun else "single run"
        raise AssertionError(f"README has no untagged {kind} to fill placeholders from")

    def fill(self, text: str, dry: bool = False, rewound: list[Path] | None = None) -> str:
        """The command with its placeholders filled. ``<run dir>``/``PATH`` and the sweep dirs
        are fresh copies of the source's dirs; a command with ``ckpt_path=last`` gets them
        rewound (see ``rewind``, listed in ``rewound``), so it resumes a run for real."""
        copies: dict[bool, Path] = {}
        resume = "ckpt_path=last" in text.split()

        def copy(multirun: bool) -> Path:
            if multirun not in copies:
                if dry:
                    copies[multirun] = self.base / "not-run"
                else:
                    source = self.check(self.source(multirun))[0].out
                    target = self.new_dir("copy-of-" + source.name)
                    shutil.copytree(source, target, dirs_exist_ok=True)
                    if resume and rewound is not None:
                        rewound.append(rewind(min_job(target) if multirun else target))
                    copies[multirun] = target
            return copies[multirun]

        def value(match: re.Match) -> str:
            name = match.group(0)
            if name == "...":
                return SWEEP_REST
            if name == "N":
                return SMALL_N
            if name in ("<same overrides>", "<same sweep overrides>"):
                words = self.source(name == "<same sweep overrides>").words[3:]
                return shlex.join(w for w in words if w not in ("-m", "--multirun"))
            if name == "<run dir>":
                return str(copy(False))
            if name == "PATH":
                return str(copy(False) / "checkpoints" / "last.ckpt")
            if name in ("<same multirun dir>", "multirun/<date_time>"):
                return str(copy(True))
            raise AssertionError(f"unknown placeholder {name!r} in {text!r}")

        return PLACEHOLDER.sub(value, text)

    # -- running

    def new_dir(self, name: str) -> Path:
        self._dirs += 1
        slug = re.sub(r"[^\w.-]+", "_", name)[:40]
        path = self.base / f"{self._dirs:02d}-{slug}"
        path.mkdir(parents=True)
        return path

    def _run(self, command: Command) -> list[Run]:
        if command.words[0] == "make":
            lines = make_recipe(shlex.split(" ".join(command.words[1:])))
            runs, moved = [], {}
            for line in lines:
                if line.startswith("echo "):
                    continue
                for old, new in moved.items():  # a dir an earlier line wrote, moved to tmp
                    line = line.replace(old, new)
                run = self._run_one(Command(line, command.where), moved)
                runs.append(run)
            return runs
        return [self._run_one(command, {})]

    def _run_one(self, command: Command, moved: dict[str, str]) -> Run:
        module = command.module
        if module not in RUNNABLE_MODULES:
            kinds = ", ".join(NEEDS)
            pytest.fail(
                f"{command.where[0]}: no way to run {command.text!r}: tag it in README.md "
                f"(<!-- needs: KIND -->, KIND one of {kinds}) or teach tests/readme_commands.py"
            )
        # Lines equal but for a literal run dir (which the runner moves into tmp anyway) run
        # once: `make train` and `make train ARGS="hydra.run.dir=/tmp/run"`.
        literal_dirs = [w.split("=", 1)[1] for w in command.text.split() if LITERAL_DIR.match(w)]
        key = " ".join(w for w in command.text.split() if not LITERAL_DIR.match(w))
        if key in self.lines:
            run = self.lines[key]
            moved.update({value: str(run.out) for value in literal_dirs})
            return run
        self.lines[key] = run = self._run_line(command, module, moved)
        return run

    def _run_line(self, command: Command, module: str, moved: dict[str, str]) -> Run:
        rewound: list[Path] = []
        words = shlex.split(self.fill(command.text, rewound=rewound))
        args = words[words.index(module) + 1 :]
        out = self.new_dir(module.rsplit(".", 1)[-1])
        if module == "gan_lab.train":
            args, out = self._train_args(command, args, out, moved)
        else:
            args += RUNNABLE_MODULES[module]
            if "fashion_mnist" in args and not FASHION_MNIST.is_dir():
                pytest.skip(f"Fashion-MNIST is not installed at {FASHION_MNIST}")
        env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
        line = [sys.executable, "-m", module, *args]
        result = processes.run(line, timeout=SUBPROCESS_TIMEOUT, check=False, cwd=ROOT, env=env)
        output = result.stdout + result.stderr
        where = f"{command.where[0]}: {command.text}\nran: {shlex.join(line)}"
        assert result.returncode == 0, f"{where}\nexit {result.returncode}:\n{output[-4000:]}"
        if module == "gan_lab.train":
            assert list(out.glob("done")) or list(out.glob("*/done")), f"{where}\nno done marker"
        for run_dir in rewound:
            assert (run_dir / "done").is_file(), f"{where}\n{run_dir} did not finish"
            assert f"{run_dir / 'done'} exists" not in output, f"{where}\n{run_dir} not resumed"
        return Run(args, out, output)

    def _train_args(
        self, command: Command, args: list[str], out: Path, moved: dict[str, str]
    ) -> tuple[list[str], Path]:
        """The command's own arguments, shortened, writing into ``out`` (unless a filled
        placeholder names its dir); and the run or sweep dir it writes."""
        flags = [a for a in args if a.startswith("-")]
        if set(flags) - {"-m", "--multirun"}:
            pytest.fail(f"{command.where[0]}: unexpected flags {flags} in {command.text!r}")
        overrides = [a for a in args if not a.startswith("-")]
        try:
            cfg = self.compose(overrides)
        except Exception as error:  # noqa: BLE001 - the README command's failure
            pytest.fail(f"{command.where[0]}: {command.text}\n{type(error).__name__}: {error}")
        multirun = bool(flags) or str(cfg.hydra.mode) == "RunMode.MULTIRUN"
        dir_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        args = list(args)
        for i, arg in enumerate(args):
            key, _, value = arg.partition("=")
            if key in ("hydra.run.dir", "hydra.sweep.dir") and not value.startswith(str(self.base)):
                moved[value] = str(out)  # a literal dir outside tmp, e.g. /tmp/run
                args[i] = f"{key}={out}"
        if not any(a.startswith(f"{dir_key}=") for a in args):
            args.append(f"{dir_key}={out}")
        data = cfg.get("data") or {}
        if str(data.get("_target_", "")).endswith("FashionMNIST") and data.get("root") is None:
            if not FASHION_MNIST.is_dir():
                pytest.skip(f"Fashion-MNIST is not installed at {FASHION_MNIST}")
        trials = OmegaConf.select(cfg, "hydra.sweeper.n_trials") is not None
        run_dir = [a.split("=", 1)[1] for a in args if a.startswith(f"{dir_key}=")][-1]
        return [*args, *SHORT_TRAIN, *([SHORT_TRIALS] if trials else [])], Path(run_dir)


def _group_of(override: str) -> str:
    """``eval=inception`` -> ``eval``, ``optimizer@optimizer.g=adam`` -> ``optimizer``."""
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def min_job(sweep_dir: Path) -> Path:
    """The first job's dir of a sweep (``0/``)."""
    return min((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def rewind(run_dir: Path) -> Path:
    """As if the run had been stopped right after its first checkpoint: no ``done`` marker and
    ``last.ckpt`` is that checkpoint, so ``ckpt_path=last`` resumes mid-run."""
    (run_dir / "done").unlink(missing_ok=True)
    first = min((run_dir / "checkpoints").glob("iter_*.ckpt"))
    shutil.copyfile(first, run_dir / "checkpoints" / "last.ckpt")
    return run_dir

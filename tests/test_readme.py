"""The README's and docs/' commands stay true: every command of their bash blocks names a file,
module or target that exists, and its flags parse (experiments through their own Config, the
modules through their own argument parsers, an ablation's variants through their fields),
without training anything; and every docs page the README links exists."""

import re
import shlex

import pytest

from conftest import REPO
from resnetf.config import load_experiment, parse

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def readme_commands() -> list[list[str]]:
    text = "\n".join(page.read_text() for page in PAGES)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            for part in line.split("&&"):
                words = [w for w in shlex.split(part) if w != "&"]
                while words and re.match(r"^[A-Z_]+=", words[0]):  # CUDA_VISIBLE_DEVICES=0 ...
                    words = words[1:]
                commands.append(words)
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) >= 15


def test_the_readme_links_pages_that_exist_and_stays_a_landing_page():
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)\)", text)
    assert len(set(links)) >= 9
    for link in links:
        assert (REPO / link).is_file(), link
    assert len(text.splitlines()) <= 160


def _check_ablate(args):
    from resnetf import ablate

    options, overrides = ablate.arguments(args)
    base = parse(load_experiment(REPO / options.experiment), overrides)
    ablate.variants(base, options.vary)  # each variant a valid config that differs from the base


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_each_readme_command_names_what_exists_and_its_flags_parse(words):
    program, args = words[0], words[1:]
    if program == "python" and args[0].startswith("experiments/"):
        parse(load_experiment(REPO / args[0]), args[1:])  # exits 2 on an unknown or bad flag
    elif program == "resnetf" and args[0] == "ablate":
        _check_ablate(args[1:])
    elif program == "python" and args[0] == "-m":
        module, rest = args[1], args[2:]
        if module == "resnetf.ablate":
            _check_ablate(rest)
        elif module == "resnetf.bench":
            from resnetf.bench import arguments

            options, flags = arguments(rest)
            parse(load_experiment(REPO / options.experiment), flags)
        else:
            assert module in ("resnetf.compare", "resnetf.predict"), module
            __import__(module, fromlist=["parser"]).parser().parse_args(rest)
    elif program == "make":
        assert re.search(rf"^{args[0]}:", (REPO / "Makefile").read_text(), re.M)
    elif program == "pip":
        assert (REPO / args[args.index("-r") + 1]).is_file()
    elif program == "wandb":
        if args[0] == "sweep":
            assert (REPO / args[1]).is_file()
        else:
            assert args[0] == "agent" and "--count" in args
    else:
        pytest.fail(f"the README runs {program!r}, which this test does not know how to check")

"""Generic CLI conventions: help lists every subcommand, examples, exit codes, --debug."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from lift3d import __version__
from lift3d.cli import COMMANDS, main
from lift3d.errors import InputError


def command_module(module_name: str):
    """The subcommand's module, or skip while its contributor has not landed it yet."""
    try:
        return importlib.import_module(f"lift3d.commands.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"lift3d.commands.{module_name}":
            pytest.skip(f"lift3d.commands.{module_name} not written yet")
        raise


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, _, help_line in COMMANDS:
        assert name in out
        assert help_line.split()[0] in out  # one line of help beside each name


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: lift3d" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("name, module_name", [(n, m) for n, m, _ in COMMANDS])
def test_subcommand_help_has_an_example(name, module_name, capsys):
    module = command_module(module_name)
    assert module.HELP and "\n" not in module.EXAMPLE
    assert module.EXAMPLE.startswith(f"lift3d {name}")
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"example:\n  {module.EXAMPLE}" in capsys.readouterr().out


def test_help_does_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from lift3d.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_input_error_is_one_line_exit_2_and_debug_raises(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["inspect", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == f"lift3d inspect: error: {missing}: no such file or folder\n"
    with pytest.raises(InputError, match="no such file"):
        main(["--debug", "inspect", str(missing)])
    with pytest.raises(InputError):
        main(["inspect", "--debug", str(missing)])


def test_bad_option_value_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(tmp_path), "--layout", "dicom"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'dicom'" in capsys.readouterr().err


def test_unknown_config_key_names_the_key(phantom_brats_dir, tmp_path, capsys):
    command_module("train")
    out = tmp_path / "run"
    code = main(
        ["train", "translate", "--data", str(phantom_brats_dir), "--out", str(out)]
        + ["--set", "train.no_such_key=1"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "train.no_such_key" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_wrong_config_type_names_the_key(phantom_brats_dir, tmp_path, capsys):
    command_module("train")
    out = tmp_path / "run"
    code = main(
        ["train", "translate", "--data", str(phantom_brats_dir), "--out", str(out)]
        + ["--set", "train.max_steps=many"]
    )
    assert code == 2
    assert "train.max_steps" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    "argv_tail",
    [
        ["train", "translate", "--task", "mr2ct", "--data", "{data}", "--out", "{data}/run"],
        [
            "evaluate",
            "--task",
            "mr2ct",
            "--pred",
            "{data}",
            "--ref",
            "{data}",
            "--out",
            "{data}/Task1/eval",
        ],
        ["phantom", "--layout", "synthrad", "--cases", "1", "--out", "{data}/Task1/brain"],
    ],
    ids=["train", "evaluate", "phantom-over-dataset"],
)
def test_output_inside_input_dataset_is_refused(phantom_synthrad_dir, tmp_path, capsys, argv_tail):
    """An output path inside the input dataset: exit 2, one line naming it, nothing written."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(phantom_synthrad_dir, data)
    before = _snapshot(data)
    argv = [a.format(data=data) for a in argv_tail]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(data) in err
    assert _snapshot(data) == before

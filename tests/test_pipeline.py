"""The pipeline as a user drives it: make targets on a tiny config, incremental re-runs, the CI entry point."""

import subprocess

from tests.conftest import ROOT, TINY, needs_data, path_overrides


def make(*args, cwd=ROOT):
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def ran(output: str) -> set[str]:
    """Which stages a make run executed (it echoes each `python -m pipeline STAGE` it runs)."""
    return {line.split(" -m pipeline ")[1].split()[0] for line in output.splitlines() if " -m pipeline " in line}


@needs_data
def test_make_is_incremental_and_reruns_only_what_a_change_touches(tmp_path):
    config = tmp_path / "tiny.toml"
    paths = "\n".join(o.removeprefix("paths.") for o in path_overrides(tmp_path))
    config.write_text(f'base = "{TINY}"\n\n[vocab]\nmin_freq = 1\n\n[paths]\n{paths}\n')
    target = "vocab"

    assert ran(make(target, f"CONFIG={config}")) == {"data", "prepare", "vocab"}
    assert ran(make(target, f"CONFIG={config}")) == set()  # a second run does nothing
    assert (tmp_path / "vocab" / "src.txt").is_file()

    config.write_text(config.read_text().replace("min_freq = 1", "min_freq = 2"))
    assert ran(make(target, f"CONFIG={config}")) == {"vocab"}
    assert ran(make(target, f"CONFIG={config}", "ARGS=prepare.max_train=200")) == {"prepare", "vocab"}


def test_makefile_and_readme_agree_on_the_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make all" in readme and "make test" in readme and "make test" in ci

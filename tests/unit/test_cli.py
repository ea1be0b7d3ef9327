from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watcher", *args], capture_output=True, text=True, cwd=cwd)


def test_invalid_settings_exit_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "w.toml"
    bad.write_text("[reconcile]\nwait_min = 'soon'\n")
    out = run("--config", str(bad), "status")
    assert out.returncode == 2
    assert "reconcile.wait_min" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unknown_plugin_kind_is_a_settings_error(tmp_path: Path) -> None:
    bad = tmp_path / "w.toml"
    bad.write_text(f'state_dir = "{tmp_path}/s"\n[source]\nkind = "zookeeper"\n')
    out = run("--config", str(bad), "once")
    assert out.returncode == 2 and "source.kind: unknown kind 'zookeeper'" in out.stderr


def test_plugin_option_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "w.toml"
    bad.write_text(f'state_dir = "{tmp_path}/s"\n[source]\nkind = "localdir"\npaht = "x"\n')
    out = run("--config", str(bad), "once")
    assert out.returncode == 2 and "source.paht: Extra inputs are not permitted" in out.stderr


def test_bad_trusted_key_fails_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "w.toml"
    bad.write_text(f'state_dir = "{tmp_path}/s"\n[source]\nkind = "localdir"\npath = "{tmp_path}"\n'
                   f'[trust]\ntrusted_keys = ["{tmp_path}/missing.pub"]\n')
    out = run("--config", str(bad), "once")
    assert out.returncode == 2 and "trust.trusted_keys" in out.stderr and "Traceback" not in out.stderr


def test_building_the_parser_imports_no_command_s_heavy_libraries() -> None:
    """Every command module is imported to build the parser, `run` included: the signing,
    registry and container-engine code must load only when its command runs (it cost the
    idle daemon ~10 MiB of RSS, docs/performance.md)."""
    code = """if True:
        import sys
        from watcher.cli import build_parser
        build_parser()
        heavy = ("cryptography", "watcher.fetchers.oci_push", "watcher.fetchers.oci_api",
                 "watcher.runtimes.engine", "watcher.runtimes.docker", "watcher.fleet.record",
                 "shtab")
        print(sorted(m for m in heavy if m in sys.modules))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == "[]", out


def test_revision_reads_the_center_for_a_compare_and_swap(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    settings = tmp_path / "w.toml"
    settings.write_text(f'state_dir = "{tmp_path}/s"\n[source]\nkind = "localdir"\npath = "{models}"\n')
    assert run("--config", str(settings), "revision", "demo").stdout.strip() == "0"
    doc = tmp_path / "demo.yaml"
    doc.write_text("name: demo\nversion: v1.0.0\nmodel: {uri: 'file:///srv/m'}\n")
    published = run("--config", str(settings), "publish", "demo", str(doc), "--if-revision", "0")
    assert published.returncode == 0, published.stderr
    assert run("--config", str(settings), "revision", "demo").stdout.strip() == published.stdout.strip()
    (models / "demo.yaml").unlink()
    models.rmdir()
    gone = run("--config", str(settings), "revision", "demo")
    assert gone.returncode == 4 and "does not exist" in gone.stderr, gone.stderr

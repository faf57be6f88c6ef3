"""CLI test helpers shared by the test modules: run a command in-process and assert success, or a user error
(exit code 2, the expected text, no traceback)."""

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def ok(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def bad(args, match):
    """Exit code 2 with ``match`` in the output and no traceback; returns the non-empty output lines."""
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    err = res.stderr if hasattr(res, "stderr") and res.stderr else res.output
    assert "Traceback" not in res.output
    assert match in err, err
    return [line for line in err.strip().splitlines() if line.strip()]

"""The project's promise for bad input, asserted once: exit code 2 and one line on stderr naming
each of `needles` (with empty_stdout, nothing on stdout either: nothing half-done was printed)."""


def assert_user_error(r, *needles, empty_stdout=False):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    if empty_stdout:
        assert r.stdout == "", r.stdout
    for n in needles:
        assert n in lines[0], (n, lines[0])

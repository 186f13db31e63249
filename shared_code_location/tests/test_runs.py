"""What `cli.py run` prints of a location that does not load: the error the user can fix, where, and what Dagster
was doing; not a traceback."""

from shared_code_location.runtime.runs import load_error


def _load_component():
    try:
        raise KeyError("experiment 'd': overides")  # the user's mistake, deep in a chain of Dagster's errors
    except KeyError as error:
        raise RuntimeError("Error while loading component experiments[0]:\n├── tree\n└── lines") from error


def test_a_load_error_names_the_innermost_error_and_where_it_came_from():
    try:
        _load_component()
    except RuntimeError as error:
        text = load_error(error)
    lines = text.splitlines()
    assert lines[0].startswith("KeyError: \"experiment 'd': overides\" (at ") and "test_runs.py:" in lines[0]
    assert lines[1] == "while: Error while loading component experiments[0]:" and len(lines) == 2

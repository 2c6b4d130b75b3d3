"""The console facade's tables: rich on a terminal that fits them, plain tab-separated lines
everywhere else (logs, pipes, CI), never a number broken across lines."""
import io

from rich.console import Console

from acr.core import console

COLUMNS = ["setting", "flatness", "repetition"]
ROWS = [["music_forward", "4.4e-05±7.1e-07", "0.93*"], ["even", "4e-07±1e-08", "-"]]
PLAIN = ("mean ± 95% CI (over prompts)\nsetting\tflatness\trepetition\n"
         "music_forward\t4.4e-05±7.1e-07\t0.93*\neven\t4e-07±1e-08\t-\n")


def test_table_off_a_terminal_is_plain_tab_separated_lines(capsys):
    console.table("mean ± 95% CI (over prompts)", COLUMNS, ROWS)
    assert capsys.readouterr().err == PLAIN


def test_table_on_a_terminal_is_rich_when_it_fits_else_plain(monkeypatch, capsys):
    wide = Console(file=io.StringIO(), force_terminal=True, width=100, color_system=None)
    monkeypatch.setattr(console, "_err", wide)
    console.table("mean ± 95% CI (over prompts)", COLUMNS, ROWS)
    drawn = wide.file.getvalue().splitlines()
    assert drawn[0].rstrip() == "mean ± 95% CI (over prompts)"
    row = "│ music_forward │ 4.4e-05±7.1e-07 │      0.93* │"
    assert any(row in line for line in drawn)
    assert capsys.readouterr().err == ""
    narrow = Console(file=io.StringIO(), force_terminal=True, width=30, color_system=None)
    monkeypatch.setattr(console, "_err", narrow)
    console.table("mean ± 95% CI (over prompts)", COLUMNS, ROWS)
    assert narrow.file.getvalue() == "" and capsys.readouterr().err == PLAIN

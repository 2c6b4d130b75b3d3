"""`acr listen`: blind listening tests in the browser (build, import, serve), a run browser, and
the analysis of the ratings next to the objective metrics (for `acr analyze`).

clips (the run's clips) -> design (trials per rater slot) -> page (the self-contained page) ->
build; responses (checks, storage) -> importing and serve; browse (the non-blind grid);
analysis (+ plots) -> listening_summary, which `acr analyze` calls.
"""
from acr.commands.listen.analysis import ListeningSummary, listening_summary
from acr.commands.listen.browse import build_browser
from acr.commands.listen.build import build_test
from acr.commands.listen.importing import import_responses
from acr.commands.listen.serve import make_server, serve_test
from acr.core.runs import LISTENING

__all__ = ["build_test", "import_responses", "make_server", "serve_test", "build_browser",
           "listening_summary", "ListeningSummary", "LISTENING"]

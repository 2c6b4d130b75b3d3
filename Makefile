# acr: `make demo` and `make test` install everything they need on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.acr-installed

.PHONY: install demo test bench lock clean

install: $(STAMP)

# Re-runs only when the pins or the project metadata change; a second `make install` is a no-op.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --no-deps -r requirements.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PY) -c "import audiocraft.models, acr.cli" 2>/dev/null
	touch $(STAMP)

demo: install
	$(VENV)/bin/acr experiment configs/demo.yaml

test: install
	$(PY) -m pytest -q

# Every benchmark runs, even after one misses its goal (exit 1); the target fails at the end,
# naming those that missed.
BENCHMARKS := cli_startup experiment_batching analyze finetune_cached_codes export_memory \
              tracking_overhead runs_listing gpu

bench: install
	@missed=""; for name in $(BENCHMARKS); do echo "== benchmarks/$$name.py"; \
	  $(PY) benchmarks/$$name.py || missed="$$missed $$name"; done; \
	  if [ -n "$$missed" ]; then echo "make bench: goals missed or failed:$$missed"; exit 1; fi

# Rewrite requirements.txt from the current venv (after a deliberate upgrade), keeping its header.
lock:
	{ sed -n '/^#/p' requirements.txt; $(PIP) freeze | grep -v '^-e\|^acr' \
	  | sed -E 's/^((nvidia-|cuda-|triton)[^ ]*)$$/\1 ; platform_system == "Linux"/'; \
	  $(PIP) list --format=freeze | grep '^setuptools=='; } > requirements.txt.new
	mv requirements.txt.new requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache

# The README's two commands: `make demo` and `make test`. Each creates .venv when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install demo test lint docs bench browser flite clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -c constraints.txt -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/kwscompress demo

lint: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

docs: $(INSTALLED)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

# The report test opens report.html in headless Chromium (a Debian package, not on PyPI).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: chromium could not be installed; the report's browser test will skip"

# Flite, the synthetic dataset's optional second speech engine ([data.synth] flite_share), is a
# Debian package (PyPI has none); the tests of it need it.
flite:
	@ldconfig -p 2>/dev/null | grep -q libflite_cmu_us_slt || { [ "$$(id -u)" = 0 ] \
	  && command -v apt-get >/dev/null && { apt-get install -y -qq libflite1 >/dev/null 2>&1 \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libflite1 >/dev/null; }; }; } \
	  || echo "note: libflite1 could not be installed; the Flite tests will skip"

test: $(INSTALLED) browser flite
	$(PY) -m ruff check .
	$(PY) -m pytest
	$(MAKE) docs

bench: $(INSTALLED)
	for b in benchmarks/bench_*.py; do $(PY) $$b; done

clean:
	rm -rf $(VENV) docs/_build build dist *.egg-info

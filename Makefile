# geoaudio: `make app` (install, build the demo, start the app) and `make test` (install, check the
# import layers with lint-imports, run the suite).
PYTHON ?= python3
VENV   ?= .venv
PORT   ?= 8501
# The app's address: this machine only by default; HOST=0.0.0.0 opens it to the network (docs/app.md).
HOST   ?= 127.0.0.1
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.geoaudio-installed

.PHONY: install browser test app demo bench bench-gpu clean-demo results results-report

# Creates the virtual environment if it is missing and installs the project with its test tools.
# Reruns only when pyproject.toml changed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,cluster]'
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the browser end-to-end test (playwright drives it; nothing is downloaded
# by playwright itself). Installed only where we are root and it is missing.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the browser test will be skipped"; \
	  else echo "note: chromium not found and not root; the browser test will be skipped"; fi; \
	fi

test: install browser
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python -m app.demo

app: install demo
	$(BIN)/streamlit run app/main.py --server.address $(HOST) --server.port $(PORT) --server.headless true

# The CPU-sized runs (benchmarks/mapping.py: a 4,000 px raster at the bundle's 6 m and a 20,000 px one
# read 12x coarser, with and without overviews, about 15 minutes on 2 cores).
bench: install
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/mapping.py --json benchmarks/mapping.json

# The GPU check (benchmarks/gpu.py, under 5 minutes on one GPU); says "no CUDA" and exits 0 elsewhere.
bench-gpu: install
	$(BIN)/python benchmarks/gpu.py --json benchmarks/gpu.json

# Every run behind docs/results.md (python -m model.results; the recipe is model/evaluation/recipe.py):
# about an hour on a 2-core CPU (the 8 pretrainings and 24 fine-tunings of its inits section: 41 min), data and bundles in runs/results-work, the small JSON files of
# each run in docs/results/. Finished runs are skipped, so a killed run resumes.
results: install
	$(BIN)/python -m model.results run --out docs/results
	$(BIN)/python -m model.results report --runs docs/results --out docs/results.md

# Only docs/results.md, from the committed files under docs/results/.
results-report: install
	$(BIN)/python -m model.results report --runs docs/results --out docs/results.md

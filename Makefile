# latflow: `make demo` and `make test` each create .venv when missing and install the project.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU wheel of torch; users with a CUDA torch already in the venv keep theirs (see README).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/latflow run runs/demo.yaml --overwrite

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs/out build *.egg-info

# latflow: `make demo` and `make test` each create .venv when missing and install the project.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU wheel of torch; users with a CUDA torch already in the venv keep theirs (see README).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The mpi extra (mpi4py + the PyPI mpich wheel) puts mpiexec into $(VENV)/bin, so `make test` also runs
# the MPI tests under `mpiexec -n 2` without any system MPI. On a cluster use the site's MPI instead
# (runs/slurm/README_cluster.md).
EXTRAS ?= test,dev,mpi

$(VENV)/.installed: pyproject.toml Makefile | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/latflow run runs/demo.yaml --overwrite

test: install
	$(VENV)/bin/mpiexec -n 2 $(PY) -c "from mpi4py import MPI; assert MPI.COMM_WORLD.Get_size() == 2"
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs/out build *.egg-info

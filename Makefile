# leaklab: the two commands are `make book` and `make test`.
# Both set the environment up themselves (a virtual environment in .venv), installing
# torch first so that pip never pulls a CUDA build onto a CPU-only machine.

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
TORCH_SPEC  ?= torch==2.13.0
STAMP       := $(VENV)/.leaklab-installed
JB          := $(VENV)/bin/jupyter-book

.PHONY: help env test unit notebooks solutions book-check book lab clean

help:
	@echo "make test   set up, run the unit tests, every notebook (smoke profile), and check the book's structure"
	@echo "make book   set up, execute every chapter (book profile) and build _build/html"
	@echo "make lab    set up and open the chapters in JupyterLab, in the project's environment"
	@echo "make solutions  run every chapter with its exercises' solutions (smoke profile), timed"
	@echo "make clean  remove build outputs"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[book,dev,flower]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (leaklab)" >/dev/null
	touch $(STAMP)

env: $(STAMP)

# Unit tests and every chapter notebook (nbmake), smoke profile, in one pytest run.
# Each chapter runs in well under a minute in the smoke profile; a notebook that times out
# (a kernel that stopped answering) is retried once, and no other failure is retried.
# JOBS processes share the test files and chapters (pytest-xdist, one file per process at a time).
NBMAKE := --nbmake --nbmake-timeout=420 --reruns 1 --only-rerun "timed out"
JOBS   ?= 2
XDIST  := -n $(JOBS) --dist loadfile
test: env
	LEAKLAB_PROFILE=smoke LEAKLAB_PROGRESS=0 $(PY) -m pytest tests notebooks $(NBMAKE) $(XDIST) -q
	$(MAKE) book-check

unit: env
	LEAKLAB_PROFILE=smoke LEAKLAB_PROGRESS=0 $(PY) -m pytest tests $(XDIST) -q

notebooks: env
	LEAKLAB_PROFILE=smoke LEAKLAB_PROGRESS=0 $(PY) -m pytest notebooks $(NBMAKE) $(XDIST) -q

# Every exercise's solution, run after its chapter in the same kernel (smoke profile unless
# LEAKLAB_PROFILE says otherwise): each chapter's time, the solutions' time and their outputs.
solutions: env
	LEAKLAB_PROFILE=$${LEAKLAB_PROFILE:-smoke} LEAKLAB_PROGRESS=0 $(PY) benchmarks/chapters.py --solutions notebooks/*.ipynb

# The book's structure without executing it: toc, cross-references, bibliography, API page.
book-check: env
	mkdir -p _build
	sed 's/execute_notebooks: *force/execute_notebooks: "off"/' _config.yml > _build/_config.check.yml
	$(JB) build . --config _build/_config.check.yml --path-output _build/check -W --keep-going -q --all
	@echo "book structure: ok"

# The rendered book: every chapter executed in the book profile (or $LEAKLAB_PROFILE), with
# progress bars off (LEAKLAB_PROGRESS=0): a reader running a chapter sees them, the book does not.
book: env
	LEAKLAB_PROFILE=$${LEAKLAB_PROFILE:-book} LEAKLAB_PROGRESS=0 $(JB) build . -W --keep-going --all
	@echo "book: _build/html/index.html"

# The chapters in JupyterLab, with the kernel of .venv (book profile unless LEAKLAB_PROFILE says
# otherwise). JupyterLab comes with the book extra; an older .venv without it gets it here.
lab: env
	$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install --quiet "jupyterlab>=4"
	LEAKLAB_PROFILE=$${LEAKLAB_PROFILE:-book} $(PY) -m jupyter lab notebooks

clean:
	rm -rf _build .pytest_cache

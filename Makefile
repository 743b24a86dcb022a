# make test: install what the tests need into the current Python environment, then run them.
# It is the README's test command and what CI runs.
PYTHON ?= python

test: test-requirements lint
	$(PYTHON) -m pytest -q

# the fast tier: every module at least once, about a minute on an idle 2-core machine
test-fast: test-requirements
	$(PYTHON) -m pytest -q -m "not slow"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test-requirements:
	$(PYTHON) -m pip install -q -r requirements-test.txt
	# W&B's sweep engine pins numpy<2 in its metadata; the schema check needs none of its pins
	$(PYTHON) -m pip install -q --no-deps sweeps==0.3.0

.PHONY: test test-fast lint test-requirements

# Set-up, tests and the embedded demo. Everything runs inside .venv in the repository.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install test demo bench clean

install: $(BIN)/sparsefusion

$(BIN)/sparsefusion: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	@touch $@

test:
	$(BIN)/python -m pytest -q

demo:
	$(BIN)/sparsefusion demo

bench:
	$(BIN)/sparsefusion bench

clean:
	rm -rf outputs .pytest_cache

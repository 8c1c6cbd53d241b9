# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test benchmark clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/adregnet register Resources/SampleData/lung_fixed.nii.gz Resources/SampleData/lung_moving.nii.gz \
		--fixed-landmarks Resources/SampleData/lung_fixed_landmarks.csv \
		--moving-landmarks Resources/SampleData/lung_moving_landmarks.csv --landmarks-check-only \
		--preset lung-ct --quality balanced -o demo-output --overwrite
	@echo "Demo outputs are in demo-output/ (open report.png first; metrics.json has the numbers)."

# one pytest process per CPU, at most four (Testing/conftest.py shares the CPUs' threads among them)
test: $(STAMP)
	$(PY) -m pytest -q -n logical --maxprocesses 4 --dist worksteal Testing

benchmark: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.txt -r benchmarks/requirements.txt
	$(PY) -m benchmarks -o benchmark-output

clean:
	rm -rf demo-output benchmark-output .pytest_cache

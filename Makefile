# LogHog: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench deb clean check-config

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Run the daemon from source, in the foreground, on the unprivileged development config.
run: $(STAMP)
	mkdir -p var/log/loghogd var/lib/loghogd var/run/loghogd
	$(VPY) -m loghogd --config conf/dev/loghogd.conf

check-config: $(STAMP)
	$(VPY) -m loghogd --check-config --config conf/dev/loghogd.conf

# The whole test suite: unit, integration (real daemons on loopback) and, as root on Debian, packaging.
test: $(STAMP)
	$(VPY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VPY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache

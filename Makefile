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

# Debian packages (bookworm), built in a copy of the tree so nothing lands beside it:
# build/deb/loghogd_*.deb and build/deb/python3-loghog_*.deb. Build dependencies: sudo apt-get build-dep ./
deb:
	rm -rf build/deb && mkdir -p build/deb/src
	tar --exclude=./.git --exclude=./.venv --exclude=./var --exclude=./build --exclude='*.egg-info' \
	    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis -cf - . | tar -C build/deb/src -xf -
	cd build/deb/src && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	if command -v lintian >/dev/null; then lintian --fail-on error,warning build/deb/*.changes; fi
	@ls -l build/deb/*.deb

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache

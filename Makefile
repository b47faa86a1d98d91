# LogHog: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench deb clean check-config

# pip's and setuptools' chatter goes to a log, shown only when the install fails, so that the
# first screen of `make run` is the daemon's own.
define venv_install
	@echo "Installing loghog into $(1) with $(2) (log: $(1)/install.log) ..."
	@$(2) -m venv $(1) > /dev/null
	@{ $(1)/bin/python -m pip install --upgrade pip && \
	   $(1)/bin/python -m pip install -e '.[server,test]'; } > $(1)/install.log 2>&1 || \
	    { tail -n 40 $(1)/install.log; echo "pip install failed: see $(1)/install.log" >&2; exit 1; }
	@touch $(1)/.installed
endef

# The daemon's dependencies are the 'server' extra: `pip install loghog` alone is the client.
$(STAMP): setup.py
	$(call venv_install,$(VENV),$(PYTHON))

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

# LogHog: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test unit-other-python bench deb clean check-config

# pip's and setuptools' chatter goes to a log, shown only when the install fails, so that the
# first screen of `make run` is the daemon's own.
define venv_install
	@echo "Installing loghog into $(1) with $(2) (log: $(1)/install.log) ..."
	@$(2) -m venv $(1) > /dev/null
	@{ $(1)/bin/python -m pip install --upgrade pip && \
	   $(1)/bin/python -m pip install -e '.[server,test,fast]'; } > $(1)/install.log 2>&1 || \
	    { tail -n 40 $(1)/install.log; echo "pip install failed: see $(1)/install.log" >&2; exit 1; }
	@touch $(1)/.installed
endef

# The daemon's dependencies are the 'server' extra: `pip install loghog` alone is the client.
$(STAMP): setup.py
	$(call venv_install,$(VENV),$(PYTHON))

# Run the daemon from source, in the foreground, on the unprivileged development config.
run: $(STAMP)
	@mkdir -p var/log/loghogd var/lib/loghogd var/run/loghogd
	@echo "loghogd, from source, in the foreground (Ctrl-C stops it). From another terminal:"
	@echo "    $(VENV)/bin/loghog -a my-first-app 'Hello world!'"
	@echo "    cat var/log/loghogd/my-first-app/root.log"
	@$(VPY) -m loghogd --config conf/dev/loghogd.conf

check-config: $(STAMP)
	$(VPY) -m loghogd --check-config --config conf/dev/loghogd.conf

# The whole test suite: unit, integration (real daemons on loopback) and, as root on Debian, packaging;
# first the unit tests under Debian's own Python when it is not the one above.
test: $(STAMP) unit-other-python
	$(VPY) -m pytest $(PYTEST_ARGS)

# The unit tests under $(OTHER_PYTHON) (Debian's python3), in a venv of its own, when that Python
# exists and is not the one $(VENV) was made from; a single line saying why otherwise.
OTHER_PYTHON ?= /usr/bin/python3
OTHER_VENV ?= .venv-other-python
WHICH_PYTHON := import sys; print(sys.version.split()[0], sys.base_prefix)

$(OTHER_VENV)/.installed: setup.py
	$(call venv_install,$(OTHER_VENV),$(OTHER_PYTHON))

# The packaging test (tests/packaging: as root, on Debian with apt, unless LOGHOG_SKIP_PACKAGING=1)
# builds the packages, and the build runs the unit tests under Debian's python3 with Debian's
# libraries: `make test` with no PYTEST_ARGS does not run them a second time under that Python.
PACKAGING_RUNS := $(shell [ "$$(id -u)" = 0 ] && [ -x /usr/bin/apt-get ] && [ -f /etc/debian_version ] \
	&& [ "$$LOGHOG_SKIP_PACKAGING" != 1 ] && echo yes)

unit-other-python: $(STAMP)
	@if [ ! -x $(OTHER_PYTHON) ]; then echo "unit-other-python: no $(OTHER_PYTHON), skipped"; \
	elif [ "$$($(OTHER_PYTHON) -c '$(WHICH_PYTHON)')" = "$$($(VPY) -c '$(WHICH_PYTHON)')" ]; then \
	    echo "unit-other-python: $(OTHER_PYTHON) is $(VENV)'s Python, skipped"; \
	elif [ "$(MAKECMDGOALS)" = test ] && [ -z "$(PYTEST_ARGS)" ] && [ "$(PACKAGING_RUNS)" = yes ] \
	        && [ "$$(readlink -f $(OTHER_PYTHON))" = "$$(readlink -f /usr/bin/python3)" ]; then \
	    echo "unit-other-python: the packaging test's build runs the unit tests under" \
	        "$(OTHER_PYTHON) (Debian's libraries), skipped here"; \
	else $(MAKE) --no-print-directory $(OTHER_VENV)/.installed && \
	    $(OTHER_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit; fi

bench: $(STAMP)
	$(VPY) benchmarks/run.py $(BENCH_ARGS)

# Debian packages (bookworm), built in a copy of the tree so nothing lands beside it:
# build/deb/loghogd_*.deb and build/deb/python3-loghog_*.deb. Build dependencies: sudo apt-get build-dep ./
LINTIAN ?= yes
deb:
	@if [ "$(LINTIAN)" != no ] && ! command -v lintian >/dev/null; then \
	    echo "make deb: lintian is not installed (apt-get build-dep does not install it), so the" \
	        "packages could not be checked: sudo apt-get install lintian, or make deb LINTIAN=no" >&2; \
	    exit 1; fi
	rm -rf build/deb && mkdir -p build/deb/src
	tar --exclude=./.git --exclude='./.venv*' --exclude=./var --exclude=./build --exclude='*.egg-info' \
	    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis -cf - . | tar -C build/deb/src -xf -
	cd build/deb/src && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	@if [ "$(LINTIAN)" = no ]; then echo "make deb: LINTIAN=no: the packages were NOT checked by lintian" >&2; \
	else echo "lintian --fail-on error,warning build/deb/*.changes" && \
	    lintian --fail-on error,warning build/deb/*.changes && echo "lintian: clean"; fi
	@ls -l build/deb/*.deb

clean:
	rm -rf $(VENV) $(OTHER_VENV) var build *.egg-info .pytest_cache

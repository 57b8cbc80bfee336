# The README's two commands. Both install what they need on Debian 12 first.
#   make run   build and start onaird on conf.d/onair.yaml (with every stock plugin)
#   make test  install test dependencies, build, run every test (ctest)
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

RUN_PACKAGES = build-essential cmake pkg-config libevent-dev libwebsockets-dev libyaml-dev \
	libjansson-dev libjwt-dev libssl-dev libsqlite3-dev libmongoc-dev libbson-dev libsodium-dev \
	libcurl4-openssl-dev zlib1g-dev libusrsctp-dev libev-dev libwebsockets-evlib-ev libavformat-dev libavcodec-dev libswscale-dev libswresample-dev tzdata
TEST_PACKAGES = $(RUN_PACKAGES) libcmocka-dev libsrtp2-dev abigail-tools python3 python3-pytest openssl \
	python3-websockets python3-aiosmtpd python3-cryptography python3-icalendar curl \
	clang-format chromium ffmpeg nginx-light libnginx-mod-rtmp simple-whip-client gstreamer1.0-nice gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-base iproute2 util-linux \
	debhelper dpkg-dev mmdebstrap clang
# `make package`: Debian's packaging tools on top of the build dependencies
PACKAGE_PACKAGES = $(RUN_PACKAGES) debhelper dpkg-dev
PKG_BUILD ?= build-pkg
DIST ?= dist
PKG_REV ?=
# `make fuzz`: the libFuzzer harnesses (tests/fuzz) built with clang in $(FUZZ_BUILD), each
# run for FUZZ_SECONDS (and at most FUZZ_RUNS executions when set)
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?= 0
# every harness tests/fuzz/harnesses.cmake lists
FUZZERS ?= $(shell sed -n 's/^set(ONAIR_FUZZ_HARNESSES \(.*\))/\1/p' tests/fuzz/harnesses.cmake)
# `make tsan`: ThreadSanitizer build in $(TSAN_BUILD), then the tests that cover threads (a ctest
# regex: the work pool, the loop's cross-thread posts and the network thread, WebSocket and HTTP,
# media/WHIP/WHEP, chat fan-out); README.md "make tsan".
TSAN_BUILD ?= build-tsan
# what is built: everything by default; `make tsan TSAN_TARGETS='$(TSAN_QUICK_TARGETS)'` builds only what
# TSAN_TESTS run (about a quarter of the compile time)
TSAN_TARGETS ?= all
TSAN_QUICK_TARGETS = onaird test_workpool test_net test_bus test_dispatch hello testkit hooktest streams chat
TSAN_TESTS ?= ^(unit\.test_(workpool|net|bus|dispatch)|integration\.test_(websocket|ws_network|http|media|chat))$$
# any report fails: the unit test exits 66, the integration harness fails the test on the report
# in onaird's output (tests/integration/onair_harness.py); library-only suppressions in tests/tsan.supp
TSAN_OPTIONS_ALL = halt_on_error=0 exitcode=66 second_deadlock_stack=1 history_size=4 \
	suppressions=$(CURDIR)/tests/tsan.supp

.PHONY: run test build deps-run deps-test sanitize tsan clean format package fuzz

# A development token secret and a restreaming key (sealing saved stream keys) are made
# once under data/ (git-ignored) unless ONAIR_JWT_SECRET / ONAIR_MULTIPLATFORM_KEY are set;
# production sets its own (docs/auth.md, plugins/multiplatform/README.md).
run: deps-run build
	@mkdir -p data && [ -s data/.dev-jwt-secret ] || \
		(umask 077 && head -c 32 /dev/urandom | base64 > data/.dev-jwt-secret)
	@[ -s data/.dev-multiplatform-key ] || \
		(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > data/.dev-multiplatform-key)
	ONAIR_JWT_SECRET=$${ONAIR_JWT_SECRET:-$$(cat data/.dev-jwt-secret)} \
		ONAIR_MULTIPLATFORM_KEY=$${ONAIR_MULTIPLATFORM_KEY:-$$(cat data/.dev-multiplatform-key)} \
		ONAIR_PLUGIN_DIR=$(CURDIR)/$(BUILD)/plugins ./$(BUILD)/core/onaird -c conf.d/onair.yaml

test: deps-test build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

build:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

# ASan + UBSan build of everything, then the whole suite (used by .ci/run).
sanitize: deps-test
	$(MAKE) build BUILD=build-asan CMAKE_FLAGS="-DONAIR_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug"
	cd build-asan && ctest --output-on-failure -j$(JOBS)

# ThreadSanitizer build of everything, then the tests that cover threads (TSAN_TESTS above).
tsan: deps-test
	cmake -S . -B $(TSAN_BUILD) -DONAIR_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(TSAN_BUILD) -j$(JOBS) --target $(TSAN_TARGETS)
	cd $(TSAN_BUILD) && TSAN_OPTIONS="$(TSAN_OPTIONS_ALL) $$TSAN_OPTIONS" \
		ctest --output-on-failure -j$(JOBS) -R '$(TSAN_TESTS)'

# Debian packages onaird and onair-sdk-dev (packaging/debian) into $(DIST)/: the source
# files (all but git-ignored ones) are copied to $(PKG_BUILD)/src, packaging/debian
# becomes its debian/, and dpkg-buildpackage builds there. PKG_REV=<commit> packages that
# commit instead of the working tree. README.md: "Install on Debian".
package:
	@./packaging/install-deps.sh $(PACKAGE_PACKAGES)
	rm -rf $(PKG_BUILD) $(DIST)/onaird_*.deb $(DIST)/onaird-dbgsym_*.deb \
		$(DIST)/onair-sdk-dev_*.deb && mkdir -p $(PKG_BUILD)/src $(DIST)
	$(if $(PKG_REV),git archive $(PKG_REV),git ls-files -z --cached --others --exclude-standard | \
		tar --null -T - --ignore-failed-read -cf -) | tar -C $(PKG_BUILD)/src -xf -
	rm -rf $(PKG_BUILD)/src/debian && cp -r packaging/debian $(PKG_BUILD)/src/debian
	cd $(PKG_BUILD)/src && DEB_BUILD_OPTIONS="parallel=$(JOBS) nocheck" \
		dpkg-buildpackage -b -us -uc
	cp $(PKG_BUILD)/*.deb $(DIST)/
	@ls -l $(DIST)/*.deb

fuzz:
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DONAIR_FUZZ=ON -DONAIR_TESTS=OFF \
		-DONAIR_WERROR=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(FUZZ_BUILD) -j$(JOBS) --target fuzzers
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_RUNS) $(FUZZERS)

deps-run:
	@./packaging/install-deps.sh $(RUN_PACKAGES)

deps-test:
	@./packaging/install-deps.sh $(TEST_PACKAGES)
	@command -v npm >/dev/null || ./packaging/install-deps.sh nodejs npm
	@# CongoDB, the MongoDB-compatible server the storage tests run against
	@cd tests/mongo && { [ node_modules/.package-lock.json -nt package-lock.json ] || \
		npm ci --no-audit --no-fund --loglevel=error; }
	@# playwright-core drives Debian's chromium in the browser tests (no browser download)
	@cd tests/e2e && { [ node_modules/.package-lock.json -nt package-lock.json ] || \
		PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error; }
	@# livekit-server-sdk (webhooks: LiveKit's own receiver; calls: tokens) and livekit-client (calls e2e)
	@cd tests/livekit && { [ node_modules/.package-lock.json -nt package-lock.json ] || \
		npm ci --no-audit --no-fund --loglevel=error; }

format:
	git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) build-asan $(TSAN_BUILD)

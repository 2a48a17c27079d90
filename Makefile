# memfed's front door. `make help` lists the targets.
#
# Two build trees: build/release (the default, what `make install` ships and
# what real programs and the QEMU guest run) and build/asan (clang with
# AddressSanitizer + UBSan and the libFuzzer targets, where `make test` runs
# the suite). Tests that preload memfed into uninstrumented programs, or boot
# a guest, take their binaries from build/release (MEMFED_RELEASE_DIR).

JOBS       ?= $(shell nproc)
RELEASE    := build/release
ASAN       := build/asan
DEB_DIR    := build/deb
PREFIX     ?= /usr/local
CTEST_ARGS ?=

.PHONY: all deps release asan test test-unit bench soak demo install deb kmod format clean help

all: release

help:
	@echo "make deps     install every Debian package memfed needs (idempotent)"
	@echo "make          release build in $(RELEASE)"
	@echo "make test     deps + both builds + every test (unit, integration, fuzz, QEMU)"
	@echo "make bench    deps + release build + benchmarks with their baselines"
	@echo "make soak     deps + release build + long fault runs (daemon kills under programs)"
	@echo "make demo     deps + release build + a one-node federation demo"
	@echo "make install  install to PREFIX=$(PREFIX) (DESTDIR honoured)"
	@echo "make deb      Debian packages of the release build in $(DEB_DIR), checked by lintian"
	@echo "make kmod     build kmod/memfed.ko against Debian's 6.1 headers"
	@echo "make format   clang-format the C++ sources"

deps:
	bash scripts/deps.sh

$(RELEASE)/CMakeCache.txt:
	cmake -S . -B $(RELEASE) -DCMAKE_BUILD_TYPE=Release

release: $(RELEASE)/CMakeCache.txt
	cmake --build $(RELEASE) -j $(JOBS)

$(ASAN)/CMakeCache.txt:
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
		-DMEMFED_SANITIZE=ON -DMEMFED_FUZZ=ON \
		-DMEMFED_RELEASE_DIR=$(CURDIR)/$(RELEASE)

asan: $(ASAN)/CMakeCache.txt
	cmake --build $(ASAN) -j $(JOBS)

test: deps release asan
	ctest --test-dir $(ASAN) --output-on-failure $(CTEST_ARGS)

# Unit tests only: the quick loop while developing.
test-unit: asan
	ctest --test-dir $(ASAN) --output-on-failure -L unit $(CTEST_ARGS)

bench: deps release
	bash scripts/deps.sh bench
	bash scripts/bench.sh $(RELEASE)

# Long fault runs, not part of `make test` (scripts/soak.sh says what runs).
soak: deps release
	bash scripts/soak.sh $(RELEASE)

demo: deps release
	bash scripts/demo.sh $(RELEASE)

install: release
	cmake --install $(RELEASE) --prefix $(PREFIX)

# memfed, libmemfed0, libmemfed-dev and memfed-dkms from the release tree
# (debian/rules says why it reuses it), into $(DEB_DIR) rather than ../.
deb: release
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)
	MEMFED_BUILD=$(RELEASE) MEMFED_DEB_DIR=$(CURDIR)/$(DEB_DIR) dpkg-buildpackage -us -uc -b \
		--buildinfo-option=-u$(DEB_DIR) --buildinfo-file=$(DEB_DIR)/memfed.buildinfo \
		--changes-option=-u$(DEB_DIR) --changes-file=$(DEB_DIR)/memfed.changes
	lintian --fail-on error $(DEB_DIR)/memfed.changes

kmod:
	bash scripts/qemu/build-kmod.sh

format:
	git ls-files '*.cc' '*.h' '*.hpp' | grep -v '^kmod/' | xargs clang-format -i

clean:
	rm -rf build

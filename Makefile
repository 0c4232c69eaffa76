# The README's commands. Every target installs what is missing first.
BUILD_DIR     ?= build
SAN_DIR       ?= build-sanitize
FUZZ_DIR      ?= build-fuzz
JOBS          ?= $(shell nproc)
CMAKE_GEN     := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")
CTEST_ARGS    ?=

.PHONY: all deps build run test sanitize bench fuzz clean format

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	@bash scripts/run.sh $(BUILD_DIR)/assistd

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The whole suite under ASan + UBSan.
sanitize: deps
	cmake -S . -B $(SAN_DIR) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Sanitize -DASSISTD_BUILD_BENCH=OFF
	cmake --build $(SAN_DIR) -j $(JOBS)
	cd $(SAN_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

bench: build
	@bash bench/run_all.sh $(BUILD_DIR)

fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release \
	  -DASSISTD_FUZZ=ON -DASSISTD_BUILD_TESTS=OFF -DASSISTD_BUILD_BENCH=OFF
	cmake --build $(FUZZ_DIR) -j $(JOBS)
	@bash scripts/run-fuzz.sh $(FUZZ_DIR) $${FUZZ_SECONDS:-120}

format:
	find src tests bench -name '*.cpp' -o -name '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR) $(SAN_DIR) $(FUZZ_DIR)

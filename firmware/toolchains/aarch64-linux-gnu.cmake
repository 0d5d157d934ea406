# CMake toolchain: the gateway agent for 64-bit ARM (Debian arm64, aarch64-linux-gnu).
# Used by firmware/build; by hand:
#   cmake -S . -B build/firmware/aarch64/cmake -DMIDWAY_AGENT_ONLY=ON \
#         -DCMAKE_TOOLCHAIN_FILE=firmware/toolchains/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(MIDWAY_FW_TRIPLET aarch64-linux-gnu)
include("${CMAKE_CURRENT_LIST_DIR}/gateway.cmake")

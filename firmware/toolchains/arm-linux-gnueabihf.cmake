# CMake toolchain: the gateway agent for 32-bit ARM with hardware floating point (Debian armhf,
# arm-linux-gnueabihf: ARMv7-A, VFPv3-D16, Thumb-2). Used by firmware/build; by hand:
#   cmake -S . -B build/firmware/armhf/cmake -DMIDWAY_AGENT_ONLY=ON \
#         -DCMAKE_TOOLCHAIN_FILE=firmware/toolchains/arm-linux-gnueabihf.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(MIDWAY_FW_TRIPLET arm-linux-gnueabihf)
include("${CMAKE_CURRENT_LIST_DIR}/gateway.cmake")

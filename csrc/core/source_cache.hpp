// source_cache.hpp — internal: what every backend that compiles rk.Source handlers shares: where the
// device dialect is, what of it goes into a compiled handler's identity, where compiled handlers are
// cached, and the hash that names them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ringkernel/runtime.hpp"

namespace rk {

// Where the device dialect's headers are: RuntimeConfig::include_dirs, $RINGKERNEL_INCLUDE_DIR, the
// install prefix, or the source tree this library was built from.
std::vector<std::string> dialect_include_dirs(const RuntimeConfig &cfg);

// The dialect's headers, as a handler includes them (the first of `incs` that has each): the text of all
// of them is part of a compiled handler's identity, so a changed dialect is a different handler.
const std::vector<std::string> &dialect_headers();

// The text of the dialect's headers in `incs`; CompileError when rk_kernel.h is not there.
std::string dialect_identity(const std::vector<std::string> &incs);

// Where compiled handlers are cached (RuntimeConfig::cache_dir, $RINGKERNEL_CACHE_DIR, $XDG_CACHE_HOME or
// ~/.cache, then /ringkernel), and making sure a directory exists and is private to the user (Error
// otherwise: what is cached there is loaded into the process).
std::string handler_cache_dir(const RuntimeConfig &cfg);
void make_private_dir(const std::string &path);

// FNV-1a, 64 bits: a stable content hash for cache file names (not a security boundary: the cache lives
// in the user's own directory); and the same as 16 hex digits.
std::uint64_t fnv1a(const std::string &s, std::uint64_t h = 1469598103934665603ull);
std::string fnv1a_hex(const std::string &s);

// [A-Za-z_][A-Za-z0-9_]*, at most 128 characters.
bool valid_identifier(const std::string &s);

// Small file and string helpers the compilers share.
std::vector<std::string> split_list(const std::string &s, char sep);  // empty parts dropped
bool is_regular_file(const std::string &path);
std::string read_whole_file(const std::string &path);  // empty when it cannot be read
std::string env_or_empty(const char *name);

}  // namespace rk

// source_cache.cpp — the device dialect's location, compiled handlers' identity and cache (see
// source_cache.hpp).
#include "source_cache.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "ringkernel/errors.hpp"

// Set by the build (CMakeLists.txt): the installed dialect, then the source tree's.
#ifndef RINGKERNEL_SOURCE_INCLUDE_DIRS
#define RINGKERNEL_SOURCE_INCLUDE_DIRS ""
#endif
#ifndef RINGKERNEL_INSTALL_INCLUDE_DIRS
#define RINGKERNEL_INSTALL_INCLUDE_DIRS ""
#endif

namespace rk {

std::string env_or_empty(const char *name) {
    const char *v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

std::vector<std::string> split_list(const std::string &s, char sep) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : s) {
        if (c == sep) {
            if (!cur.empty()) out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
}

bool is_regular_file(const std::string &p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string read_whole_file(const std::string &p) {
    std::ifstream f(p, std::ios::binary);
    std::ostringstream o;
    o << f.rdbuf();
    return o.str();
}

std::vector<std::string> dialect_include_dirs(const RuntimeConfig &cfg) {
    if (!cfg.include_dirs.empty()) return cfg.include_dirs;
    const std::string e = env_or_empty("RINGKERNEL_INCLUDE_DIR");
    if (!e.empty()) return split_list(e, ':');
    // The install prefix chosen at configure time, else the source tree this library was built from.
    for (const char *set : {RINGKERNEL_INSTALL_INCLUDE_DIRS, RINGKERNEL_SOURCE_INCLUDE_DIRS}) {
        auto dirs = split_list(set, ';');
        if (!dirs.empty() && is_regular_file(dirs[0] + "/rk_kernel.h")) return dirs;
    }
    return split_list(RINGKERNEL_SOURCE_INCLUDE_DIRS, ';');
}

const std::vector<std::string> &dialect_headers() {
    static const std::vector<std::string> headers = {
        "rk_kernel.h", "rk_handler.h", "rk_step.h", "rk_entry_opencl.h", "rk_entry_cuda.h", "rk_builtins.h",
        "rk_ring.h",   "rk_atomic.h",  "rk_target.h", "ringkernel/layout.h", "ringkernel/rk_types.h",
        "ringkernel/rk_status.h"};
    return headers;
}

std::string dialect_identity(const std::vector<std::string> &incs) {
    std::string headers;
    for (const auto &h : dialect_headers()) {
        for (const auto &d : incs) {
            if (is_regular_file(d + "/" + h)) {
                headers += read_whole_file(d + "/" + h);
                break;
            }
        }
    }
    if (headers.find("RK_DEFINE_BLOCK_STEP") == std::string::npos) {
        std::string where;
        for (const auto &d : incs) where += (where.empty() ? "" : ", ") + d;
        throw CompileError("the device dialect headers (rk_kernel.h) were not found in the include directories [" +
                               where + "]: set RINGKERNEL_INCLUDE_DIR or RuntimeConfig::include_dirs",
                           "");
    }
    return headers;
}

std::string handler_cache_dir(const RuntimeConfig &cfg) {
    std::string d = cfg.cache_dir;
    if (d.empty()) d = env_or_empty("RINGKERNEL_CACHE_DIR");
    if (d.empty()) {
        std::string base = env_or_empty("XDG_CACHE_HOME");
        if (base.empty()) {
            const std::string home = env_or_empty("HOME");
            if (home.empty()) return "/tmp/ringkernel-" + std::to_string(::getuid());
            base = home + "/.cache";
        }
        d = base + "/ringkernel";
    }
    return d;
}

void make_private_dir(const std::string &path) {
    std::string cur;
    for (const auto &part : split_list(path, '/')) {
        cur += "/" + part;
        if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST)
            throw Error("cannot create the handler cache directory " + cur + ": " + std::strerror(errno));
    }
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw Error("the handler cache " + path + " is not a directory");
    if (st.st_uid != ::getuid() || (st.st_mode & 022) != 0)
        throw Error("the handler cache directory " + path +
                    " is not private (it must belong to this user and not be group- or world-writable); "
                    "fix its permissions or set RINGKERNEL_CACHE_DIR");
}

std::uint64_t fnv1a(const std::string &s, std::uint64_t h) {
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

std::string fnv1a_hex(const std::string &s) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a(s)));
    return hex;
}

bool valid_identifier(const std::string &s) {
    if (s.empty() || s.size() > 128) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        if (!(alpha || (i > 0 && c >= '0' && c <= '9'))) return false;
    }
    return true;
}

}  // namespace rk

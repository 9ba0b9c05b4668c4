// host_compiler.cpp — portable-source handlers for the CPU backend: the user's device-dialect code,
// wrapped with the persistent-loop step, compiled by the host C compiler into a shared object and
// loaded with dlopen. Objects are cached on disk by a hash of everything that goes into them
// (source, entry, compiler, flags, dialect headers), and in memory for the life of the process.
#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "../../core/kernel_core.hpp"

extern char **environ;

namespace rk {

HostModule::~HostModule() {
    if (dl) dlclose(dl);
}

namespace {

#ifndef RINGKERNEL_SOURCE_INCLUDE_DIRS
#define RINGKERNEL_SOURCE_INCLUDE_DIRS ""
#endif
#ifndef RINGKERNEL_INSTALL_INCLUDE_DIRS
#define RINGKERNEL_INSTALL_INCLUDE_DIRS ""
#endif

std::string env(const char *name) {
    const char *v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

std::vector<std::string> split(const std::string &s, char sep) {
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

bool is_file(const std::string &p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool executable(const std::string &p) { return is_file(p) && ::access(p.c_str(), X_OK) == 0; }

std::string read_file(const std::string &p) {
    std::ifstream f(p, std::ios::binary);
    std::ostringstream o;
    o << f.rdbuf();
    return o.str();
}

// The compiler command: $CC (may carry arguments, e.g. "ccache gcc"), else cc, gcc, clang on PATH.
std::vector<std::string> find_compiler(const RuntimeConfig &cfg) {
    std::string cc = cfg.compiler.empty() ? env("CC") : cfg.compiler;
    if (!cc.empty()) return split(cc, ' ');
    for (const char *name : {"cc", "gcc", "clang"})
        for (const auto &dir : split(env("PATH"), ':'))
            if (executable(dir + "/" + name)) return {dir + "/" + name};
    throw CompileError(
        "no C compiler found to build the handler: set $CC or install gcc or clang (looked for cc, gcc and "
        "clang on PATH)",
        "");
}

}  // namespace

std::vector<std::string> dialect_include_dirs(const RuntimeConfig &cfg) {
    if (!cfg.include_dirs.empty()) return cfg.include_dirs;
    const std::string e = env("RINGKERNEL_INCLUDE_DIR");
    if (!e.empty()) return split(e, ':');
    // The install prefix chosen at configure time, else the source tree this library was built from.
    for (const char *set : {RINGKERNEL_INSTALL_INCLUDE_DIRS, RINGKERNEL_SOURCE_INCLUDE_DIRS}) {
        auto dirs = split(set, ';');
        if (!dirs.empty() && is_file(dirs[0] + "/rk_kernel.h")) return dirs;
    }
    return split(RINGKERNEL_SOURCE_INCLUDE_DIRS, ';');
}

std::string handler_cache_dir(const RuntimeConfig &cfg) {
    std::string d = cfg.cache_dir;
    if (d.empty()) d = env("RINGKERNEL_CACHE_DIR");
    if (d.empty()) {
        std::string base = env("XDG_CACHE_HOME");
        if (base.empty()) {
            const std::string home = env("HOME");
            if (home.empty()) return "/tmp/ringkernel-" + std::to_string(::getuid());
            base = home + "/.cache";
        }
        d = base + "/ringkernel";
    }
    return d;
}

// Create the cache directory (private to the user) and check that it is: the objects in it are
// loaded into the process, so nobody else may be able to write there.
void make_private_dir(const std::string &path) {
    std::string cur;
    for (const auto &part : split(path, '/')) {
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

// FNV-1a, 64 bits: a stable content hash for cache file names (not a security boundary: the cache
// lives in the user's own directory).
std::uint64_t fnv1a(const std::string &s, std::uint64_t h) {
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
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

namespace {

// Run argv with stdout and stderr into log_path; returns the exit status (-1 if it could not start).
int run(const std::vector<std::string> &argv, const std::string &log_path) {
    std::vector<char *> args;
    for (const auto &a : argv) args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    const int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return -1;
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

std::string dialect_identity(const std::vector<std::string> &incs) {
    static const char *const kHeaders[] = {"rk_kernel.h", "rk_builtins.h", "rk_ring.h", "rk_atomic.h", "rk_target.h",
                                           "ringkernel/layout.h", "ringkernel/rk_types.h"};
    std::string headers;
    for (const char *h : kHeaders) {
        for (const auto &d : incs) {
            if (is_file(d + "/" + h)) {
                headers += read_file(d + "/" + h);
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

std::shared_ptr<HostModule> compile_host_source(const std::string &code, const std::string &entry,
                                               const RuntimeConfig &cfg) {
    if (!valid_identifier(entry))
        throw std::invalid_argument("entry must be a C identifier naming the handler function, got '" + entry + "'");
    if (code.empty()) throw std::invalid_argument("handler source is empty");
    const std::vector<std::string> cc = find_compiler(cfg);
    const std::vector<std::string> incs = dialect_include_dirs(cfg);

    const std::string headers = dialect_identity(incs);  // the dialect compiled against is part of its identity

    std::ostringstream src;
    src << "/* generated by ringkernel: a portable-source handler for the CPU backend */\n"
        << "#include \"rk_kernel.h\"\n"
        << "#line 1 \"handler\"\n"
        << code << "\n"
        << "#line 1 \"ringkernel-step\"\n"
        << "RK_DEFINE_BLOCK_STEP(rk_cpu_step, " << entry << ")\n"
        << "unsigned rk_cpu_abi(void) { return RK_KERNEL_ABI; }\n";
    const std::string source = src.str();

    std::vector<std::string> flags = {"-std=gnu11", "-O2", "-fPIC", "-shared", "-Wall"};
#ifdef RINGKERNEL_HANDLER_CFLAGS
    for (const auto &f : split(RINGKERNEL_HANDLER_CFLAGS, ' ')) flags.push_back(f);
#endif
    std::string identity = source + '\0' + headers;
    for (const auto &a : cc) identity += '\0' + a;
    for (const auto &a : flags) identity += '\0' + a;
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a(identity)));

    static std::mutex mu;
    static std::map<std::string, std::weak_ptr<HostModule>> loaded;
    std::lock_guard<std::mutex> lock(mu);
    if (auto m = loaded[hex].lock()) return m;

    const std::string dir = handler_cache_dir(cfg);
    make_private_dir(dir);
    const std::string so = dir + "/handler-" + hex + ".so";
    if (!is_file(so)) {
        const std::string tag = std::to_string(::getpid()) + "-" + hex;
        const std::string c_path = dir + "/handler-" + tag + ".c";
        const std::string tmp_so = dir + "/handler-" + tag + ".so.tmp";
        const std::string log_path = dir + "/handler-" + tag + ".log";
        {
            std::ofstream f(c_path, std::ios::binary);
            f << source;
            if (!f) throw Error("cannot write the handler source to " + c_path);
        }
        std::vector<std::string> argv = cc;
        argv.insert(argv.end(), flags.begin(), flags.end());
        for (const auto &d : incs) argv.push_back("-I" + d);
        argv.push_back("-o");
        argv.push_back(tmp_so);
        argv.push_back(c_path);
        const int status = run(argv, log_path);
        std::string log = read_file(log_path);
        std::remove(log_path.c_str());
        std::remove(c_path.c_str());
        if (status != 0) {
            std::remove(tmp_so.c_str());
            if (status == -1 && log.empty())
                throw CompileError("could not run the C compiler '" + cc[0] + "' (set $CC to a working compiler)", log);
            throw CompileError("the handler did not compile (" + cc[0] + " exited with status " +
                                   std::to_string(status) + "):\n" + log,
                               log);
        }
        if (std::rename(tmp_so.c_str(), so.c_str()) != 0) {
            std::remove(tmp_so.c_str());
            throw Error("cannot move the compiled handler into the cache at " + so + ": " + std::strerror(errno));
        }
    }
    auto m = std::make_shared<HostModule>();
    m->path = so;
    m->dl = dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!m->dl) throw CompileError(std::string("cannot load the compiled handler ") + so + ": " + dlerror(), "");
    auto abi = reinterpret_cast<unsigned (*)(void)>(dlsym(m->dl, "rk_cpu_abi"));
    m->step = reinterpret_cast<int (*)(rk_ctx *)>(dlsym(m->dl, "rk_cpu_step"));
    if (!abi || !m->step || abi() != RK_KERNEL_ABI)
        throw CompileError("the cached handler " + so + " does not match this ringkernel (delete it to rebuild)", "");
    // Threads of a block get their own stacks when the handler may reach a barrier: whenever the
    // source names rk_barrier or includes other code that might.
    m->uses_barrier = code.find("rk_barrier") != std::string::npos || code.find("#include") != std::string::npos;
    loaded[hex] = m;
    return m;
}

}  // namespace rk

// backend_registry.cpp — the registry of backends (see backend_registry.hpp).
#include "backend_registry.hpp"

#include <stdexcept>

namespace rk {

void BackendRegistry::add(BackendEntry e) {
    if (e.name.empty() || !e.status) throw std::logic_error("a backend registers a name and a status probe");
    if (find(e.name)) throw std::logic_error("backend '" + e.name + "' registered twice");
    entries_.push_back(std::move(e));
}

void BackendRegistry::add_absent(const std::string &name, const std::string &why) {
    BackendEntry e;
    e.name = name;
    e.status = [name, why] { return BackendStatus{name, false, why}; };
    add(std::move(e));
}

const BackendEntry *BackendRegistry::find(const std::string &name) const noexcept {
    for (const auto &e : entries_)
        if (e.name == name) return &e;
    return nullptr;
}

const BackendRegistry &backend_registry() {
    static const BackendRegistry registry = [] {
        BackendRegistry r;
        register_built_backends(r);
        return r;
    }();
    return registry;
}

}  // namespace rk

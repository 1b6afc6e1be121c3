#pragma once

#include <string_view>

namespace wharf::storage {

// Test-only crash points. A failpoint is armed through the environment variable
// WHARF_FAILPOINTS, a comma-separated list of `name:N` entries: the N-th time (1-based) the code
// passes MaybeCrashAt(name), the process kills itself with SIGKILL, exactly like `kill -9` at
// that point. Unarmed (the normal case) a failpoint costs one relaxed atomic load.
//
// Crash tests use them to hit windows that random kills rarely hit, e.g. right after a
// destination committed a batch and before the delivery cursor moved.
//
// Thread safety: thread-safe.
void MaybeCrashAt(std::string_view name);

}  // namespace wharf::storage

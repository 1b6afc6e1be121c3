#pragma once

// Compact JSON text of a RapidJSON value, byte for byte what rapidjson::Writer (default flags,
// UTF-8 in and out) writes for it through Value::Accept, but appended straight to a std::string:
// runs of characters that need no escape are copied at once instead of one Put() each, which
// made the writer the largest single cost of serialising a transformed record.
//
// Exactly as the Writer: '"' and '\\' are escaped as \" and \\, control characters below 0x20 as
// \b \t \n \f \r or \u00XX (upper-case hex), every other byte (including 0x7F and the bytes of
// multi-byte UTF-8 sequences, which are not validated) is copied; integers are written with
// RapidJSON's own itoa routines and doubles with its dtoa (shortest round-trip digits, at most
// 324 decimal places), so numbers have the same text.
//
// Thread safety: stateless.

#include <string>

#include "rapidjson/document.h"

namespace wharf::pipeline::contract {

// Appends the compact JSON text of `value` to *out. Returns false when the value holds a
// non-finite double (the Writer's only failure: JSON cannot represent it); *out then holds a
// partial text the caller must discard. Recurses once per nesting level, as Value::Accept does:
// callers bound the depth (Contract::kMaxDepth).
bool AppendCompactJson(const rapidjson::Value& value, std::string* out);

}  // namespace wharf::pipeline::contract

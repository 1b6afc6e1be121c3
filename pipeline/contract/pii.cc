#include "pipeline/contract/pii.h"

#include <arpa/inet.h>
#include <re2/re2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <unordered_set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "pipeline/contract/hmac.h"

namespace wharf::pipeline::contract {
namespace {

using Match = PiiScanner::Match;

// Candidate patterns. They only find plausible shapes; the checksums, ranges and boundary rules
// are verified in code, where they can be stated exactly. All patterns are ASCII-only and
// compiled in Latin-1 mode: every byte is one character, so invalid UTF-8 in a record cannot
// make matching fail, and bytes of multi-byte UTF-8 sequences never match a pattern character.
struct Patterns {
  static RE2::Options Options() {
    RE2::Options options;
    options.set_encoding(RE2::Options::EncodingLatin1);
    options.set_log_errors(false);
    return options;
  }

  RE2 email{R"([A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*@)"
            R"((?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})",
            Options()};
  RE2 phone{R"(\+?(?:\d+|\(\d{1,5}\))(?:[ \-]?(?:\d+|\(\d{1,5}\)))*)", Options()};
  RE2 card{R"(\d(?:[ \-]?\d){12,18})", Options()};
  RE2 iban{R"([A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,32})", Options()};
  RE2 ssn{R"(\d{3}-\d{2}-\d{4}|\d{9})", Options()};
  RE2 ipv4{R"(\d{1,3}(?:\.\d{1,3}){3})", Options()};
  RE2 ipv6{R"((?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?)", Options()};

  bool ok() const {
    return email.ok() && phone.ok() && card.ok() && iban.ok() && ssn.ok() && ipv4.ok() && ipv6.ok();
  }
};

// Compiled once per process (thread-safe static initialisation); RE2 objects are immutable and
// safe to match from many threads.
const Patterns& GetPatterns() {
  static const Patterns* const patterns = new Patterns();
  return *patterns;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlnum(char c) { return IsDigit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

// The character before a match must not continue a word or a number: not an ASCII letter or
// digit, and not one of `joiners` directly after a digit ("1.2.3.4" inside "9.1.2.3.4").
bool LeftBoundary(std::string_view text, size_t begin, std::string_view joiners) {
  if (begin == 0) return true;
  char c = text[begin - 1];
  if (IsAlnum(c)) return false;
  if (joiners.find(c) != std::string_view::npos && begin >= 2 && IsDigit(text[begin - 2])) {
    return false;
  }
  return true;
}

bool RightBoundary(std::string_view text, size_t end, std::string_view joiners) {
  if (end >= text.size()) return true;
  char c = text[end];
  if (IsAlnum(c)) return false;
  if (joiners.find(c) != std::string_view::npos && end + 1 < text.size() &&
      IsDigit(text[end + 1])) {
    return false;
  }
  return true;
}

// Runs `re` over `text` and keeps the candidates `verify` accepts. `verify(begin, end)` returns
// the accepted end (it may shorten the candidate) or 0 to reject. After a rejection the search
// resumes behind the alphanumeric run the candidate started in: a match starting inside that
// run would fail the left boundary anyway, and skipping it keeps scanning linear on long runs.
template <typename Verify>
void Scan(const RE2& re, std::string_view text, Verify verify, std::vector<Match>* out) {
  const re2::StringPiece whole(text.data(), text.size());
  size_t pos = 0;
  re2::StringPiece m;
  while (pos < text.size() && re.Match(whole, pos, text.size(), RE2::UNANCHORED, &m, 1)) {
    size_t begin = static_cast<size_t>(m.data() - text.data());
    size_t end = begin + m.size();
    size_t accepted = end > begin ? verify(begin, end) : 0;
    if (accepted > begin) {
      out->push_back({begin, accepted});
      pos = accepted;
      continue;
    }
    pos = begin + 1;
    while (pos < text.size() && IsAlnum(text[pos])) ++pos;
  }
}

bool LuhnValid(std::string_view digits) {
  int sum = 0;
  bool twice = false;
  for (size_t i = digits.size(); i-- > 0;) {
    int d = digits[i] - '0';
    if (twice) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    twice = !twice;
  }
  return sum % 10 == 0;
}

// A run of digits (or one parenthesised run) inside a phone or card candidate.
struct Group {
  size_t begin;  // first byte of the group (the '(' of a parenthesised one)
  size_t end;    // one past the last byte
  std::string digits;
  bool paren = false;
  char separator = 0;  // ' ' or '-' before the group, 0 if none
};

// Splits a candidate the phone or card pattern matched into groups.
std::vector<Group> SplitGroups(std::string_view text, size_t begin, size_t end) {
  std::vector<Group> groups;
  size_t i = begin;
  if (i < end && text[i] == '+') ++i;
  while (i < end) {
    Group g;
    if (text[i] == ' ' || text[i] == '-') g.separator = text[i++];
    g.begin = i;
    if (i < end && text[i] == '(') {
      g.paren = true;
      ++i;
      while (i < end && IsDigit(text[i])) g.digits.push_back(text[i++]);
      if (i < end && text[i] == ')') ++i;
    } else {
      while (i < end && IsDigit(text[i])) g.digits.push_back(text[i++]);
    }
    g.end = i;
    if (g.begin == g.end) break;  // cannot happen for pattern matches; guards the loop
    groups.push_back(std::move(g));
  }
  return groups;
}

// Tries the candidate's group prefixes, longest first, and returns the end of the first one
// `valid(count)` accepts that also has a right boundary. A shorter prefix is only tried where the
// next group is space-separated: "4111 1111 1111 1111 2 items" holds the card, while a dash
// joins groups into one value.
template <typename Valid>
size_t LongestValidPrefix(std::string_view text, const std::vector<Group>& groups,
                          std::string_view joiners, Valid valid) {
  for (size_t count = groups.size(); count > 0; --count) {
    if (count < groups.size() && groups[count].separator != ' ') continue;
    size_t end = groups[count - 1].end;
    if (valid(count) && RightBoundary(text, end, joiners)) return end;
  }
  return 0;
}

// --- email ---

void FindEmails(std::string_view text, std::vector<Match>* out) {
  // Every match of the pattern contains its literal '@': without one there is nothing to find,
  // and most scanned values (names, ids, codes) have none. Saves the regex search for them.
  if (text.find('@') == std::string_view::npos) return;
  Scan(
      GetPatterns().email, text,
      [&](size_t begin, size_t end) -> size_t {
        if (begin > 0) {
          char c = text[begin - 1];
          if (IsAlnum(c) || std::string_view("._%+-").find(c) != std::string_view::npos) {
            return 0;
          }
        }
        if (end < text.size()) {
          char c = text[end];
          if (IsAlnum(c) || c == '-' || c == '_' || c == '@') return 0;
        }
        std::string_view address = text.substr(begin, end - begin);
        size_t at = address.find('@');
        if (at == std::string_view::npos || at > 64 || address.size() > 254) return 0;
        return end;
      },
      out);
}

// --- phone ---

bool LooksLikeDate(const std::vector<Group>& g, size_t count) {
  if (count < 3 || g[1].separator != '-' || g[2].separator != '-') return false;
  if (g[0].paren || g[1].paren || g[2].paren) return false;
  size_t a = g[0].digits.size(), b = g[1].digits.size(), c = g[2].digits.size();
  return (a == 4 && b == 2 && c == 2) || (a == 2 && b == 2 && c == 4);
}

void FindPhones(std::string_view text, bool named, std::vector<Match>* out) {
  constexpr std::string_view kJoiners = "-./:";
  Scan(
      GetPatterns().phone, text,
      [&](size_t begin, size_t end) -> size_t {
        const bool plus = text[begin] == '+';
        // Without '+', a candidate right after "<digit> " is the tail of a longer number that
        // was already refused as a whole ("4111 1111 1111 1111" must not leave the phone
        // "1111 1111 1111").
        if (!LeftBoundary(text, begin, plus ? kJoiners : "-./: ")) return 0;
        std::vector<Group> groups = SplitGroups(text, begin, end);
        // Unlike cards, a phone candidate is never shortened: dropping trailing groups would
        // turn "4111 1111 1111 1111" into the phone "4111 1111 1111".
        const size_t count = groups.size();
        if (!RightBoundary(text, end, kJoiners)) return 0;
        auto valid = [&]() {
          if (count > 6) return false;
          std::string digits;
          int parens = 0;
          for (size_t i = 0; i < count; ++i) {
            const Group& g = groups[i];
            digits += g.digits;
            if (g.paren) {
              if (++parens > 1 || i > 1 || g.digits.empty()) return false;
            } else if (i > 0 && g.digits.size() < 2) {
              return false;
            }
          }
          if (digits.size() < 7 || digits.size() > 15) return false;
          if (!plus && count == 1 && !named) return false;
          if (!plus && LooksLikeDate(groups, count)) return false;
          if (!plus && count == 3 && groups[1].separator == '-' && groups[2].separator == '-' &&
              groups[0].digits.size() == 3 && groups[1].digits.size() == 2 &&
              groups[2].digits.size() == 4 && !groups[0].paren) {
            return false;  // the SSN shape
          }
          // A card, unless the operator named the field as holding phones.
          if (!plus && !named && digits.size() >= 13 && LuhnValid(digits)) return false;
          return true;
        };
        return valid() ? end : 0;
      },
      out);
}

// --- payment card ---

void FindCards(std::string_view text, std::vector<Match>* out) {
  constexpr std::string_view kJoiners = "-./:";
  Scan(
      GetPatterns().card, text,
      [&](size_t begin, size_t end) -> size_t {
        if (!LeftBoundary(text, begin, kJoiners)) return 0;
        if (begin > 0 && text[begin - 1] == '+') return 0;  // an international phone number
        std::vector<Group> groups = SplitGroups(text, begin, end);
        return LongestValidPrefix(text, groups, kJoiners, [&](size_t count) {
          std::string digits;
          for (size_t i = 0; i < count; ++i) {
            if (count > 1 && groups[i].digits.size() < 3) return false;
            if (i > 1 && groups[i].separator != groups[1].separator) return false;
            digits += groups[i].digits;
          }
          if (digits.size() < 13 || digits.size() > 19) return false;
          if (digits[0] < '2' || digits[0] > '6') return false;
          if (digits.find_first_not_of(digits[0]) == std::string::npos) return false;
          return LuhnValid(digits);
        });
      },
      out);
}

// --- IBAN ---

// IBAN lengths (ISO 13616 registry) of the countries most often seen; other country codes are
// accepted with any length of 15..34.
int IbanLength(std::string_view country) {
  static constexpr std::pair<std::string_view, int> kLengths[] = {
      {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"BA", 20}, {"BE", 16}, {"BG", 22},
      {"BH", 22}, {"BR", 29}, {"CH", 21}, {"CY", 28}, {"CZ", 24}, {"DE", 22}, {"DK", 18},
      {"EE", 20}, {"ES", 24}, {"FI", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GI", 23},
      {"GL", 18}, {"GR", 27}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IL", 23}, {"IS", 26},
      {"IT", 27}, {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21}, {"MC", 27}, {"MT", 31},
      {"NL", 18}, {"NO", 15}, {"PL", 28}, {"PT", 25}, {"RO", 24}, {"SA", 24}, {"SE", 24},
      {"SI", 19}, {"SK", 24}, {"SM", 27}, {"TR", 26}, {"UA", 29},
  };
  for (const auto& [code, length] : kLengths) {
    if (code == country) return length;
  }
  return 0;
}

char Upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

// ISO 7064 MOD 97-10 over the rearranged IBAN (first four characters moved to the end, letters
// as 10..35), computed digit by digit so no big integers are needed.
bool IbanChecksumValid(std::string_view compact) {
  int remainder = 0;
  auto feed = [&](char c) {
    if (IsDigit(c)) {
      remainder = (remainder * 10 + (c - '0')) % 97;
    } else {
      int v = c - 'A' + 10;
      remainder = (remainder * 100 + v) % 97;
    }
  };
  for (size_t i = 4; i < compact.size(); ++i) feed(compact[i]);
  for (size_t i = 0; i < 4; ++i) feed(compact[i]);
  return remainder == 1;
}

void FindIbans(std::string_view text, std::vector<Match>* out) {
  Scan(
      GetPatterns().iban, text,
      [&](size_t begin, size_t end) -> size_t {
        if (!LeftBoundary(text, begin, "")) return 0;
        // The compact characters and where each one ends in `text`.
        std::string compact;
        std::vector<size_t> ends;
        bool spaced = false;
        for (size_t i = begin; i < end; ++i) {
          if (text[i] == ' ') {
            // Spaces only every four characters ("DE89 3704 0044 ..."); any other space ends
            // the candidate (the pattern may have run on into the following words).
            if (compact.size() % 4 != 0) break;
            spaced = true;
            continue;
          }
          compact.push_back(Upper(text[i]));
          ends.push_back(i + 1);
        }
        int fixed = IbanLength(std::string_view(compact).substr(0, 2));
        size_t longest = fixed > 0 ? fixed : 34;
        size_t shortest = fixed > 0 ? fixed : 15;
        for (size_t length = std::min(longest, compact.size()); length >= shortest; --length) {
          // With spaces, every group boundary inside the IBAN must have one.
          if (spaced) {
            bool ok = true;
            for (size_t k = 4; k < length && ok; k += 4) ok = text[ends[k - 1]] == ' ';
            if (!ok) continue;
          }
          if (!RightBoundary(text, ends[length - 1], "")) continue;
          if (IbanChecksumValid(std::string_view(compact).substr(0, length))) {
            return ends[length - 1];
          }
        }
        return 0;
      },
      out);
}

// --- US SSN ---

void FindSsns(std::string_view text, bool named, std::vector<Match>* out) {
  constexpr std::string_view kJoiners = "-./";
  Scan(
      GetPatterns().ssn, text,
      [&](size_t begin, size_t end) -> size_t {
        if (!LeftBoundary(text, begin, kJoiners) || !RightBoundary(text, end, kJoiners)) {
          return 0;
        }
        std::string digits;
        for (size_t i = begin; i < end; ++i) {
          if (IsDigit(text[i])) digits.push_back(text[i]);
        }
        if (end - begin == 9 && !named) return 0;
        std::string_view area = std::string_view(digits).substr(0, 3);
        std::string_view group = std::string_view(digits).substr(3, 2);
        std::string_view serial = std::string_view(digits).substr(5, 4);
        if (area == "000" || area == "666" || area[0] == '9') return 0;
        if (group == "00" || serial == "0000") return 0;
        if (digits == "078051120" || digits == "219099999") return 0;
        return end;
      },
      out);
}

// --- IP addresses ---

void FindIps(std::string_view text, std::vector<Match>* out) {
  std::vector<Match> found;
  Scan(
      GetPatterns().ipv4, text,
      [&](size_t begin, size_t end) -> size_t {
        if (!LeftBoundary(text, begin, ".") || !RightBoundary(text, end, ".")) return 0;
        if (begin > 0 && text[begin - 1] == '.') return 0;
        std::string candidate(text.substr(begin, end - begin));
        in_addr addr;
        return inet_pton(AF_INET, candidate.c_str(), &addr) == 1 ? end : 0;
      },
      &found);
  Scan(
      GetPatterns().ipv6, text,
      [&](size_t begin, size_t end) -> size_t {
        if (!LeftBoundary(text, begin, ".") ||
            (begin > 0 && (text[begin - 1] == ':' || text[begin - 1] == '.'))) {
          return 0;
        }
        // A single trailing ':' is punctuation ("at fe80::1: ..."), not part of the address.
        if (end - begin >= 2 && text[end - 1] == ':' && text[end - 2] != ':') --end;
        std::string candidate(text.substr(begin, end - begin));
        if (candidate.find_first_not_of(":") == std::string::npos) return 0;  // "::" alone
        if (!RightBoundary(text, end, ".")) return 0;
        // More groups follow ("1:2:3:4:5:6:7:8:9"): not an address.
        if (end + 1 < text.size() && text[end] == ':' &&
            std::isxdigit(static_cast<unsigned char>(text[end + 1]))) {
          return 0;
        }
        in6_addr addr;
        return inet_pton(AF_INET6, candidate.c_str(), &addr) == 1 ? end : 0;
      },
      &found);
  // An IPv6 address with an IPv4 tail was found twice: keep the longer, outer match.
  std::sort(found.begin(), found.end(), [](const Match& a, const Match& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end > b.end;
  });
  for (const Match& m : found) {
    if (!out->empty() && m.begin < out->back().end) continue;
    out->push_back(m);
  }
}

size_t CodePoints(std::string_view s) {
  size_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

void AppendPointerToken(std::string_view token, std::string* out) {
  out->push_back('/');
  for (char c : token) {
    if (c == '~') {
      out->append("~0");
    } else if (c == '/') {
      out->append("~1");
    } else {
      out->push_back(c);
    }
  }
}

// One value visited while scanning a spec's scope.
struct Node {
  rapidjson::Value* value;
  int parent;         // index into the node list, -1 for a scope root
  std::string token;  // member name or array index under the parent; the pointer for a root
  bool named;         // see PiiScanner's comment
};

std::string NodePointer(const std::vector<Node>& nodes, int index) {
  std::vector<int> chain;
  for (int i = index; i >= 0; i = nodes[i].parent) chain.push_back(i);
  std::string pointer = nodes[chain.back()].token;
  for (size_t k = chain.size() - 1; k-- > 0;) AppendPointerToken(nodes[chain[k]].token, &pointer);
  return pointer;
}

// Collects the scope's nodes in document order with an explicit stack (records may be nested
// deeper than the thread stack allows recursion).
void CollectNodes(rapidjson::Value* root, std::string root_pointer, bool root_named,
                  std::vector<Node>* nodes) {
  // Pending nodes; a node joins `nodes` when popped, so `nodes` ends up in document order
  // (pre-order), which is what "first match" and the reverse-order erase rely on.
  std::vector<Node> stack;
  stack.push_back({root, -1, std::move(root_pointer), root_named});
  while (!stack.empty()) {
    nodes->push_back(std::move(stack.back()));
    stack.pop_back();
    const int index = static_cast<int>(nodes->size() - 1);
    rapidjson::Value* v = (*nodes)[index].value;
    // Direct elements of a named array are named too ("/phones": ["+49 ..."]).
    const bool elements_named = (*nodes)[index].parent == -1 && (*nodes)[index].named;
    const size_t first_child = stack.size();
    if (v->IsObject()) {
      for (auto it = v->MemberBegin(); it != v->MemberEnd(); ++it) {
        stack.push_back({&it->value, index,
                         std::string(it->name.GetString(), it->name.GetStringLength()), false});
      }
    } else if (v->IsArray()) {
      for (rapidjson::SizeType i = 0; i < v->Size(); ++i) {
        stack.push_back({&(*v)[i], index, std::to_string(i), elements_named});
      }
    }
    std::reverse(stack.begin() + first_child, stack.end());
  }
}

}  // namespace

std::string_view PiiScanner::DetectorName(wharf::v1::PiiDetector d) {
  switch (d) {
    case wharf::v1::PII_EMAIL:
      return "email";
    case wharf::v1::PII_PHONE:
      return "phone";
    case wharf::v1::PII_PAYMENT_CARD:
      return "payment_card";
    case wharf::v1::PII_IBAN:
      return "iban";
    case wharf::v1::PII_US_SSN:
      return "us_ssn";
    case wharf::v1::PII_IP_ADDRESS:
      return "ip_address";
    default:
      return "unspecified";
  }
}

std::vector<PiiScanner::Match> PiiScanner::Detect(wharf::v1::PiiDetector d, std::string_view text,
                                                  bool named) {
  std::vector<Match> out;
  switch (d) {
    case wharf::v1::PII_EMAIL:
      FindEmails(text, &out);
      break;
    case wharf::v1::PII_PHONE:
      FindPhones(text, named, &out);
      break;
    case wharf::v1::PII_PAYMENT_CARD:
      FindCards(text, &out);
      break;
    case wharf::v1::PII_IBAN:
      FindIbans(text, &out);
      break;
    case wharf::v1::PII_US_SSN:
      FindSsns(text, named, &out);
      break;
    case wharf::v1::PII_IP_ADDRESS:
      FindIps(text, &out);
      break;
    default:
      break;
  }
  return out;
}

absl::StatusOr<std::shared_ptr<const PiiScanner>> PiiScanner::Compile(
    const google::protobuf::RepeatedPtrField<wharf::v1::PiiSpec>& specs, std::string hash_key) {
  if (!GetPatterns().ok()) return absl::InternalError("PII detector patterns do not compile");
  std::vector<std::string> problems;
  std::vector<CompiledSpec> compiled;
  for (int i = 0; i < specs.size(); ++i) {
    const wharf::v1::PiiSpec& spec = specs[i];
    const std::string where = absl::StrCat("pii[", i, "]: ");
    if (spec.detector() == wharf::v1::PII_DETECTOR_UNSPECIFIED ||
        !wharf::v1::PiiDetector_IsValid(spec.detector())) {
      problems.push_back(absl::StrCat(where, "detector is unspecified or unknown (",
                                      static_cast<int>(spec.detector()), ")"));
    }
    if (spec.action() == wharf::v1::PII_ACTION_UNSPECIFIED ||
        !wharf::v1::PiiAction_IsValid(spec.action())) {
      problems.push_back(absl::StrCat(where, "action is unspecified or unknown (",
                                      static_cast<int>(spec.action()), ")"));
    }
    if (spec.action() == wharf::v1::PII_HASH && hash_key.empty()) {
      problems.push_back(absl::StrCat(where, "action hash needs a hash key"));
    }
    CompiledSpec c{spec.detector(), spec.action(), {}, {}};
    for (int f = 0; f < spec.fields_size(); ++f) {
      const std::string& text = spec.fields(f);
      rapidjson::Pointer pointer(text.data(), text.size());
      // Only the RFC 6901 string form: the URI-fragment form ("#/a") would be accepted by
      // rapidjson but is not what the spec documents.
      if (!pointer.IsValid() || (!text.empty() && text[0] != '/')) {
        problems.push_back(absl::StrCat(where, "fields[", f, "] \"", text,
                                        "\" is not a JSON pointer (RFC 6901: empty or /a/b)"));
        continue;
      }
      c.fields.push_back(std::move(pointer));
      c.field_texts.push_back(text);
    }
    compiled.push_back(std::move(c));
  }
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
  return std::shared_ptr<const PiiScanner>(
      new PiiScanner(std::move(compiled), std::move(hash_key)));
}

PiiScanner::Result PiiScanner::Apply(rapidjson::Document* record, PiiFinding* finding) const {
  Result result = Result::kClean;
  for (const CompiledSpec& spec : specs_) {
    std::vector<Node> nodes;
    if (spec.fields.empty()) {
      CollectNodes(record, "", false, &nodes);
    } else {
      for (size_t f = 0; f < spec.fields.size(); ++f) {
        rapidjson::Value* target = spec.fields[f].Get(*record);
        if (target != nullptr) CollectNodes(target, spec.field_texts[f], true, &nodes);
      }
    }
    // Overlapping pointers ("/a" and "/a/b") reach the same value twice; act on it once.
    // A single node (one pointer to a scalar, the usual case) cannot repeat: no set needed.
    std::unordered_set<const rapidjson::Value*> seen;
    std::vector<int> to_drop;
    for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
      rapidjson::Value* v = nodes[i].value;
      if (nodes.size() > 1 && !seen.insert(v).second) continue;
      std::string text;
      if (v->IsString()) {
        text.assign(v->GetString(), v->GetStringLength());
      } else if (nodes[i].named && v->IsInt64()) {
        text = std::to_string(v->GetInt64());
      } else if (nodes[i].named && v->IsUint64()) {
        text = std::to_string(v->GetUint64());
      } else {
        continue;
      }
      std::vector<Match> matches = Detect(spec.detector, text, nodes[i].named);
      if (matches.empty()) continue;
      switch (spec.action) {
        case wharf::v1::PII_QUARANTINE:
          if (finding != nullptr) {
            finding->detector = spec.detector;
            finding->pointer = NodePointer(nodes, i);
          }
          return Result::kQuarantine;
        case wharf::v1::PII_DROP:
          to_drop.push_back(i);
          break;
        default: {  // PII_MASK, PII_HASH (Compile refused everything else)
          // Rewriting changes what the detector sees next to a match: a phone number refused
          // because it is glued to a digit run ("219099999+40 44 123 45 67") is a phone number
          // once that run is masked (fuzz finding F6). So the value is scanned again after each
          // rewrite until the detector finds nothing. A mask round replaces at least one digit
          // or letter by '*', so rounds end; a hash round could in principle produce a new match
          // inside a digest, so after kMaxRewriteRounds the whole value is masked instead.
          constexpr int kMaxRewriteRounds = 16;
          std::string rewritten = text;
          for (int round = 0; !matches.empty(); ++round) {
            if (round == kMaxRewriteRounds) {
              rewritten.assign(CodePoints(rewritten), '*');
              break;
            }
            std::string next;
            size_t last = 0;
            for (const Match& m : matches) {
              next.append(rewritten, last, m.begin - last);
              std::string_view found = std::string_view(rewritten).substr(m.begin, m.end - m.begin);
              if (spec.action == wharf::v1::PII_MASK) {
                next.append(CodePoints(found), '*');
              } else {
                next.append(hasher_.Hex(found));
              }
              last = m.end;
            }
            next.append(rewritten, last, std::string::npos);
            rewritten = std::move(next);
            matches = Detect(spec.detector, rewritten, nodes[i].named);
          }
          v->SetString(rewritten.data(), static_cast<rapidjson::SizeType>(rewritten.size()),
                       record->GetAllocator());
          result = Result::kModified;
          break;
        }
      }
    }
    // Erase in reverse document order so a removal never shifts the array index of a value still
    // to be removed.
    for (auto it = to_drop.rbegin(); it != to_drop.rend(); ++it) {
      std::string pointer_text = NodePointer(nodes, *it);
      if (pointer_text.empty()) {
        // The scope root itself is the value (a record that is a bare string): nothing holds it
        // but the record, so the record becomes null.
        record->SetNull();
      } else {
        rapidjson::Pointer pointer(pointer_text.data(), pointer_text.size());
        pointer.Erase(*record);
      }
      result = Result::kModified;
    }
  }
  return result;
}

}  // namespace wharf::pipeline::contract

// Runs the official JSON-Schema-Test-Suite
// (https://github.com/json-schema-org/JSON-Schema-Test-Suite) against JsonSchema: the copy vendored
// under shared/conformance (draft2020-12 and draft7) and Debian's json-schema-test-suite package
// (draft7).
//
// Every .json file of a draft directory must appear in exactly one of two tables below:
// kRunFiles (run, every case must match) or kExclusions (not run, with the reason). Individual
// groups of a run file may also be excluded in kExclusions; most exclusions are for features that
// JsonSchema refuses by design, and for those the test checks that compilation really fails.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pipeline/contract/json_schema.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace wharf::pipeline::contract {
namespace {

namespace fs = std::filesystem;

constexpr char kSuiteEnv[] = "WHARF_JSON_SCHEMA_TEST_SUITE";
constexpr char kDebianDraft7Dir[] = "/usr/share/json-schema-test-suite/tests/draft7";

// Files that run. Files under optional/format/ run with format_assertions=true (the format test
// files expect assertions); every other file runs with format_assertions=false, because `format`
// is an annotation by default in both drafts.
struct RunFile {
  const char* draft;
  const char* path;
};

// clang-format off
constexpr RunFile kRunFiles[] = {
    // draft2020-12: every keyword file JsonSchema implements.
    {"draft2020-12", "additionalProperties.json"}, {"draft2020-12", "allOf.json"},
    {"draft2020-12", "anchor.json"}, {"draft2020-12", "anyOf.json"},
    {"draft2020-12", "boolean_schema.json"}, {"draft2020-12", "const.json"},
    {"draft2020-12", "contains.json"}, {"draft2020-12", "content.json"},
    {"draft2020-12", "default.json"}, {"draft2020-12", "dependentRequired.json"},
    {"draft2020-12", "dependentSchemas.json"}, {"draft2020-12", "enum.json"},
    {"draft2020-12", "exclusiveMaximum.json"}, {"draft2020-12", "exclusiveMinimum.json"},
    {"draft2020-12", "format.json"}, {"draft2020-12", "if-then-else.json"},
    {"draft2020-12", "infinite-loop-detection.json"}, {"draft2020-12", "items.json"},
    {"draft2020-12", "maxContains.json"}, {"draft2020-12", "maxItems.json"},
    {"draft2020-12", "maxLength.json"}, {"draft2020-12", "maxProperties.json"},
    {"draft2020-12", "maximum.json"}, {"draft2020-12", "minContains.json"},
    {"draft2020-12", "minItems.json"}, {"draft2020-12", "minLength.json"},
    {"draft2020-12", "minProperties.json"}, {"draft2020-12", "minimum.json"},
    {"draft2020-12", "multipleOf.json"}, {"draft2020-12", "not.json"},
    {"draft2020-12", "oneOf.json"}, {"draft2020-12", "pattern.json"},
    {"draft2020-12", "patternProperties.json"}, {"draft2020-12", "prefixItems.json"},
    {"draft2020-12", "properties.json"}, {"draft2020-12", "propertyNames.json"},
    {"draft2020-12", "ref.json"}, {"draft2020-12", "required.json"},
    {"draft2020-12", "type.json"}, {"draft2020-12", "uniqueItems.json"},
    {"draft2020-12", "optional/anchor.json"}, {"draft2020-12", "optional/ecmascript-regex.json"},
    {"draft2020-12", "optional/bignum.json"},
    {"draft2020-12", "optional/float-overflow.json"}, {"draft2020-12", "optional/id.json"},
    {"draft2020-12", "optional/no-schema.json"}, {"draft2020-12", "optional/non-bmp-regex.json"},
    {"draft2020-12", "optional/refOfUnknownKeyword.json"},
    {"draft2020-12", "optional/format/date-time.json"},
    {"draft2020-12", "optional/format/date.json"}, {"draft2020-12", "optional/format/time.json"},
    {"draft2020-12", "optional/format/email.json"}, {"draft2020-12", "optional/format/uuid.json"},
    {"draft2020-12", "optional/format/ipv4.json"}, {"draft2020-12", "optional/format/ipv6.json"},
    {"draft2020-12", "optional/format/uri.json"},
    {"draft2020-12", "optional/format/unknown.json"},
    // draft7 (both the vendored copy and Debian's package; an entry only needs to exist in one).
    {"draft7", "additionalItems.json"}, {"draft7", "additionalProperties.json"},
    {"draft7", "allOf.json"}, {"draft7", "anyOf.json"}, {"draft7", "boolean_schema.json"},
    {"draft7", "const.json"}, {"draft7", "contains.json"}, {"draft7", "default.json"},
    {"draft7", "dependencies.json"}, {"draft7", "enum.json"},
    {"draft7", "exclusiveMaximum.json"}, {"draft7", "exclusiveMinimum.json"},
    {"draft7", "format.json"}, {"draft7", "if-then-else.json"},
    {"draft7", "infinite-loop-detection.json"}, {"draft7", "items.json"},
    {"draft7", "maxItems.json"}, {"draft7", "maxLength.json"}, {"draft7", "maxProperties.json"},
    {"draft7", "maximum.json"}, {"draft7", "minItems.json"}, {"draft7", "minLength.json"},
    {"draft7", "minProperties.json"}, {"draft7", "minimum.json"}, {"draft7", "multipleOf.json"},
    {"draft7", "not.json"}, {"draft7", "oneOf.json"}, {"draft7", "pattern.json"},
    {"draft7", "patternProperties.json"}, {"draft7", "properties.json"},
    {"draft7", "propertyNames.json"}, {"draft7", "ref.json"}, {"draft7", "required.json"},
    {"draft7", "type.json"}, {"draft7", "uniqueItems.json"},
    {"draft7", "optional/bignum.json"}, {"draft7", "optional/ecmascript-regex.json"},
    {"draft7", "optional/float-overflow.json"}, {"draft7", "optional/id.json"},
    {"draft7", "optional/non-bmp-regex.json"}, {"draft7", "optional/zeroTerminatedFloats.json"},
    {"draft7", "optional/format/date-time.json"}, {"draft7", "optional/format/date.json"},
    {"draft7", "optional/format/time.json"}, {"draft7", "optional/format/email.json"},
    {"draft7", "optional/format/ipv4.json"}, {"draft7", "optional/format/ipv6.json"},
    {"draft7", "optional/format/uri.json"}, {"draft7", "optional/format/unknown.json"},
};
// clang-format on

// Everything that does not run. `draft` is the directory name (both copies of draft7) or
// "draft7 (debian)" for Debian's copy only. `group` null = the whole file, otherwise one test
// group (by its description) of a run file. `refused` = JsonSchema refuses these schemas at compile
// time by design, which UnsupportedSchemasAreRefused verifies for every schema of the entry.
struct Exclusion {
  const char* draft;
  const char* path;
  const char* group;
  bool refused;
  const char* reason;
};

constexpr char kNotAsserted[] =
    "format not asserted: JsonSchema asserts only date-time, date, time, email, uuid, ipv4, ipv6 "
    "and uri; other formats are annotations";

constexpr Exclusion kExclusions[] = {
    // --- draft2020-12, whole files
    {"draft2020-12", "unevaluatedItems.json", nullptr, true, "unevaluated* not supported"},
    {"draft2020-12", "unevaluatedProperties.json", nullptr, true, "unevaluated* not supported"},
    {"draft2020-12", "dynamicRef.json", nullptr, true, "$dynamicRef/$dynamicAnchor not supported"},
    {"draft2020-12", "refRemote.json", nullptr, true, "remote references are refused by design"},
    {"draft2020-12", "defs.json", nullptr, true,
     "$ref to the remote 2020-12 meta-schema; remote references are refused by design"},
    {"draft2020-12", "vocabulary.json", nullptr, true,
     "custom meta-schemas ($schema other than the two drafts) are refused by design"},
    {"draft2020-12", "optional/cross-draft.json", nullptr, true,
     "remote references are refused by design"},
    {"draft2020-12", "optional/dependencies-compatibility.json", nullptr, true,
     "draft-07 `dependencies` is not a 2020-12 keyword; unknown keywords are refused"},
    {"draft2020-12", "optional/dynamicRef.json", nullptr, true,
     "$dynamicRef/$dynamicAnchor not supported"},
    {"draft2020-12", "optional/format-assertion.json", nullptr, true,
     "custom meta-schemas ($schema other than the two drafts) are refused by design"},
    {"draft2020-12", "optional/unknownKeyword.json", nullptr, true,
     "unknown keywords are refused by design"},

    {"draft2020-12", "optional/format/duration.json", nullptr, false, kNotAsserted},
    {"draft2020-12", "optional/format/ecmascript-regex.json", nullptr, false, kNotAsserted},
    {"draft2020-12", "optional/format/hostname.json", nullptr, false, kNotAsserted},
    {"draft2020-12", "optional/format/idn-email.json", nullptr, false, kNotAsserted},
    {"draft2020-12", "optional/format/idn-hostname.json", nullptr, false, kNotAsserted},
    {"draft2020-12", "optional/format/iri-reference.json", nullptr, false, kNotAsserted},
    {"draft2020-12", "optional/format/iri.json", nullptr, false, kNotAsserted},
    {"draft2020-12", "optional/format/json-pointer.json", nullptr, false, kNotAsserted},
    {"draft2020-12", "optional/format/regex.json", nullptr, false, kNotAsserted},
    {"draft2020-12", "optional/format/relative-json-pointer.json", nullptr, false, kNotAsserted},
    {"draft2020-12", "optional/format/uri-reference.json", nullptr, false, kNotAsserted},
    {"draft2020-12", "optional/format/uri-template.json", nullptr, false, kNotAsserted},
    // --- draft2020-12, single groups of run files
    {"draft2020-12", "ref.json", "remote ref, containing refs itself", true,
     "$ref to the remote meta-schema; remote references are refused by design"},
    {"draft2020-12", "ref.json", "ref creates new scope when adjacent to keywords", true,
     "uses unevaluatedProperties"},
    {"draft2020-12", "not.json",
     "collect annotations inside a 'not', even if collection is disabled", true,
     "uses unevaluatedProperties"},
    {"draft2020-12", "optional/refOfUnknownKeyword.json", "reference of a root arbitrary keyword ",
     true, "unknown keywords are refused by design"},
    {"draft2020-12", "optional/refOfUnknownKeyword.json",
     "reference of a root arbitrary keyword with encoded ref", true,
     "unknown keywords are refused by design"},
    {"draft2020-12", "optional/refOfUnknownKeyword.json",
     "reference of an arbitrary keyword of a sub-schema", true,
     "unknown keywords are refused by design"},
    {"draft2020-12", "optional/refOfUnknownKeyword.json",
     "reference of an arbitrary keyword of a sub-schema with encoded ref", true,
     "unknown keywords are refused by design"},
    // --- draft7, whole files
    {"draft7", "refRemote.json", nullptr, true, "remote references are refused by design"},
    {"draft7", "definitions.json", nullptr, true,
     "$ref to the remote draft-07 meta-schema; remote references are refused by design"},
    {"draft7", "optional/cross-draft.json", nullptr, true,
     "remote references are refused by design"},
    {"draft7", "optional/unknownKeyword.json", nullptr, true,
     "unknown keywords are refused by design"},

    {"draft7", "optional/format/ecmascript-regex.json", nullptr, false, kNotAsserted},
    {"draft7", "optional/format/hostname.json", nullptr, false, kNotAsserted},
    {"draft7", "optional/format/idn-email.json", nullptr, false, kNotAsserted},
    {"draft7", "optional/format/idn-hostname.json", nullptr, false, kNotAsserted},
    {"draft7", "optional/format/iri-reference.json", nullptr, false, kNotAsserted},
    {"draft7", "optional/format/iri.json", nullptr, false, kNotAsserted},
    {"draft7", "optional/format/json-pointer.json", nullptr, false, kNotAsserted},
    {"draft7", "optional/format/regex.json", nullptr, false, kNotAsserted},
    {"draft7", "optional/format/relative-json-pointer.json", nullptr, false, kNotAsserted},
    {"draft7", "optional/format/uri-reference.json", nullptr, false, kNotAsserted},
    {"draft7", "optional/format/uri-template.json", nullptr, false, kNotAsserted},
    {"draft7", "optional/content.json", nullptr, false,
     "contentMediaType/contentEncoding are annotations, not asserted"},
    // --- draft7, single groups of run files
    {"draft7", "ref.json", "remote ref, containing refs itself", true,
     "$ref to the remote meta-schema; remote references are refused by design"},
    // --- Debian's older draft7 copy only
    {"draft7 (debian)", "ref.json", "escaped pointer ref", true,
     "this older version keeps its definitions under unknown root keywords (\"tilda~field\"), "
     "which are refused by design; the vendored copy's version of the group runs"},
    {"draft7 (debian)", "optional/ecmascript-regex.json", "ECMA 262 regex non-compliance", false,
     "tests format \"regex\", which is not asserted (annotation)"},
};

std::string SuiteRoot() {
  const char* env = std::getenv(kSuiteEnv);
  if (env != nullptr && *env != '\0') return env;
  return WHARF_SOURCE_DIR "/../shared/conformance/json-schema-test-suite";
}

bool ReadJsonFile(const fs::path& path, rapidjson::Document* doc, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot open " + path.string();
    return false;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  doc->Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseFullPrecisionFlag |
             rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
  if (doc->HasParseError()) {
    *error = path.string() + ": JSON error at offset " + std::to_string(doc->GetErrorOffset()) +
             ": " + rapidjson::GetParseError_En(doc->GetParseError());
    return false;
  }
  if (!doc->IsArray()) {
    *error = path.string() + ": expected an array of test groups";
    return false;
  }
  return true;
}

std::string ToJson(const rapidjson::Value& v) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> writer(sb);
  v.Accept(writer);
  std::string s(sb.GetString(), sb.GetSize());
  if (s.size() > 200) s = s.substr(0, 200) + "...";
  return s;
}

// The suite's draft7 schemas rarely name their draft; the directory does. Inject `$schema` so the
// schema is compiled as the draft the directory tests.
absl::StatusOr<std::shared_ptr<const JsonSchema>> CompileForDraft(const rapidjson::Value& schema,
                                                                  const std::string& draft,
                                                                  bool format_assertions) {
  JsonSchemaOptions options;
  options.format_assertions = format_assertions;
  if (draft != "draft7" || !schema.IsObject() || schema.HasMember("$schema")) {
    return JsonSchema::Compile(schema, options);
  }
  rapidjson::Document copy;
  copy.CopyFrom(schema, copy.GetAllocator());
  copy.AddMember("$schema", "http://json-schema.org/draft-07/schema#", copy.GetAllocator());
  return JsonSchema::Compile(copy, options);
}

// Relative path with '/' separators ("optional/format/date.json").
std::vector<std::string> ListJsonFiles(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".json") {
      out.push_back(fs::relative(entry.path(), dir).generic_string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

const RunFile* FindRunFile(const std::string& draft, const std::string& path) {
  for (const RunFile& f : kRunFiles) {
    if (draft == f.draft && path == f.path) return &f;
  }
  return nullptr;
}

const Exclusion* FindFileExclusion(const std::string& draft, const std::string& path) {
  for (const Exclusion& e : kExclusions) {
    if (e.group == nullptr && draft == e.draft && path == e.path) return &e;
  }
  return nullptr;
}

const Exclusion* FindGroupExclusion(const std::string& draft, const std::string& label,
                                    const std::string& path, const std::string& group) {
  for (const Exclusion& e : kExclusions) {
    if (e.group != nullptr && (draft == e.draft || label == e.draft) && path == e.path &&
        group == e.group) {
      return &e;
    }
  }
  return nullptr;
}

// "draft7 (debian)" -> "draft7".
std::string DraftDir(const std::string& table_draft) {
  return table_draft.substr(0, table_draft.find(' '));
}

struct Tally {
  int passed = 0;
  int failed = 0;
  std::vector<std::string> problems;  // file listing problems and mismatches
};

void RunFileCases(const fs::path& file, const std::string& draft, const std::string& label,
                  const std::string& rel, Tally* tally) {
  rapidjson::Document doc;
  std::string error;
  if (!ReadJsonFile(file, &doc, &error)) {
    ++tally->failed;
    tally->problems.push_back(error);
    return;
  }
  bool format_assertions = rel.rfind("optional/format/", 0) == 0;
  for (const auto& group : doc.GetArray()) {
    std::string description = group["description"].GetString();
    if (FindGroupExclusion(draft, label, rel, description) != nullptr) {
      continue;
    }
    auto schema = CompileForDraft(group["schema"], draft, format_assertions);
    for (const auto& test : group["tests"].GetArray()) {
      bool expected = test["valid"].GetBool();
      std::string where =
          draft + "/" + rel + " | " + description + " | " + test["description"].GetString();
      if (!schema.ok()) {
        ++tally->failed;
        tally->problems.push_back(
            where + ": schema failed to compile: " + std::string(schema.status().message()));
        continue;
      }
      SchemaViolation violation;
      bool actual = (*schema)->Validate(test["data"], &violation);
      if (actual == expected) {
        ++tally->passed;
      } else {
        ++tally->failed;
        tally->problems.push_back(where + ": expected " + (expected ? "valid" : "invalid") +
                                  ", got " +
                                  (actual ? "valid" : "invalid (" + violation.message + ")") +
                                  "; data " + ToJson(test["data"]));
      }
    }
  }
}

// Runs one draft directory; returns the tally and prints the summary line.
Tally RunDraftDirectory(const fs::path& dir, const std::string& draft, const std::string& label) {
  Tally tally;
  for (const std::string& rel : ListJsonFiles(dir)) {
    bool run = FindRunFile(draft, rel) != nullptr;
    bool excluded = FindFileExclusion(draft, rel) != nullptr;
    if (run == excluded) {
      tally.problems.push_back(draft + "/" + rel +
                               (run ? " is both run and excluded"
                                    : " is neither run nor listed as "
                                      "excluded (add it to a table)"));
      ++tally.failed;
      continue;
    }
    if (run) RunFileCases(dir / rel, draft, label, rel, &tally);
  }
  std::printf("%s: %d passed, %d failed\n", label.c_str(), tally.passed, tally.failed);
  std::fflush(stdout);
  return tally;
}

void ExpectClean(const Tally& tally) {
  EXPECT_EQ(tally.failed, 0);
  size_t shown = 0;
  for (const std::string& p : tally.problems) {
    if (++shown > 200) {
      ADD_FAILURE() << "... " << tally.problems.size() - 200 << " more";
      break;
    }
    ADD_FAILURE() << p;
  }
}

fs::path RequireSuiteDir(const std::string& draft) {
  fs::path dir = fs::path(SuiteRoot()) / "tests" / draft;
  if (!fs::is_directory(dir)) {
    ADD_FAILURE() << "JSON Schema test suite not found at " << dir.string() << "; set " << kSuiteEnv
                  << " to the suite root (the directory containing tests/" << draft << ")";
  }
  return dir;
}

TEST(JsonSchemaConformanceTest, Draft202012) {
  fs::path dir = RequireSuiteDir("draft2020-12");
  if (!fs::is_directory(dir)) return;
  Tally tally = RunDraftDirectory(dir, "draft2020-12", "draft2020-12");
  EXPECT_GT(tally.passed, 1000);
  ExpectClean(tally);
}

TEST(JsonSchemaConformanceTest, Draft7) {
  fs::path dir = RequireSuiteDir("draft7");
  if (!fs::is_directory(dir)) return;
  Tally tally = RunDraftDirectory(dir, "draft7", "draft7");
  EXPECT_GT(tally.passed, 800);
  ExpectClean(tally);
}

TEST(JsonSchemaConformanceTest, Draft7Debian) {
  // deploy/install-deps.sh --tests always installs the package: its absence is a failure.
  ASSERT_TRUE(fs::is_directory(kDebianDraft7Dir))
      << "Debian package json-schema-test-suite not installed (" << kDebianDraft7Dir
      << "); run deploy/install-deps.sh --tests";
  Tally tally = RunDraftDirectory(kDebianDraft7Dir, "draft7", "draft7 (debian)");
  EXPECT_GT(tally.passed, 400);
  ExpectClean(tally);
}

// Every table entry names a file (and group) that exists in at least one copy of the suite, so
// the tables cannot silently go stale.
TEST(JsonSchemaConformanceTest, TablesMatchTheSuite) {
  std::map<std::string, std::vector<fs::path>> dirs = {
      {"draft2020-12", {fs::path(SuiteRoot()) / "tests" / "draft2020-12"}},
      {"draft7", {fs::path(SuiteRoot()) / "tests" / "draft7", fs::path(kDebianDraft7Dir)}},
      {"draft7 (debian)", {fs::path(kDebianDraft7Dir)}}};
  ASSERT_TRUE(fs::is_directory(dirs["draft2020-12"][0])) << "suite missing; set " << kSuiteEnv;
  auto exists = [&](const std::string& draft, const std::string& rel) {
    for (const fs::path& d : dirs[draft]) {
      if (fs::is_regular_file(d / rel)) return true;
    }
    return false;
  };
  for (const RunFile& f : kRunFiles) {
    EXPECT_TRUE(exists(f.draft, f.path)) << "kRunFiles: " << f.draft << "/" << f.path;
  }
  for (const Exclusion& e : kExclusions) {
    EXPECT_TRUE(exists(e.draft, e.path)) << "kExclusions: " << e.draft << "/" << e.path;
    if (e.group != nullptr) {
      EXPECT_NE(FindRunFile(DraftDir(e.draft), e.path), nullptr)
          << "group exclusion for a file that is not run: " << e.path;
      bool found = false;
      for (const fs::path& d : dirs[e.draft]) {
        rapidjson::Document doc;
        std::string error;
        if (!fs::is_regular_file(d / e.path) || !ReadJsonFile(d / e.path, &doc, &error)) continue;
        for (const auto& group : doc.GetArray()) {
          found = found || std::string(group["description"].GetString()) == e.group;
        }
      }
      EXPECT_TRUE(found) << "kExclusions: no group \"" << e.group << "\" in " << e.path;
    }
  }
}

// Whatever is excluded as "refused by design" must really be refused at compile time (not
// silently validated with a different meaning).
TEST(JsonSchemaConformanceTest, UnsupportedSchemasAreRefused) {
  int checked = 0;
  for (const Exclusion& e : kExclusions) {
    if (!e.refused) continue;
    std::string draft = DraftDir(e.draft);
    std::vector<fs::path> candidates;
    if (draft == e.draft) candidates.push_back(fs::path(SuiteRoot()) / "tests" / draft / e.path);
    if (draft == "draft7") candidates.push_back(fs::path(kDebianDraft7Dir) / e.path);
    for (const fs::path& file : candidates) {
      if (!fs::is_regular_file(file)) continue;
      rapidjson::Document doc;
      std::string error;
      ASSERT_TRUE(ReadJsonFile(file, &doc, &error)) << error;
      for (const auto& group : doc.GetArray()) {
        std::string description = group["description"].GetString();
        if (e.group != nullptr && description != e.group) continue;
        auto schema = CompileForDraft(group["schema"], draft, false);
        ++checked;
        EXPECT_FALSE(schema.ok()) << file.string() << " | " << description
                                  << ": expected the schema to be refused (" << e.reason << ")";
        if (!schema.ok()) {
          EXPECT_EQ(schema.status().code(), absl::StatusCode::kInvalidArgument);
        }
      }
    }
  }
  EXPECT_GT(checked, 100);
}

}  // namespace
}  // namespace wharf::pipeline::contract
